//! Custom resource types Plexus reads and writes (`NetworkAttachmentDefinition` and the IPAM
//! resources), and their YAML.
//!
//! Not built yet: the types arrive with the Kubernetes issue.
