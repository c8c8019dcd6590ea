//! `plexus-sriov`: an SR-IOV CNI plugin that accepts sriov-cni's configuration.
//!
//! ADD finds the VF of `deviceID` in sysfs ([`sysfs`]), saves its original state
//! ([`state`]), sets VLAN, MAC, rate, spoof checking, trust and link state on its PF ([`pf`]),
//! moves its netdev into the pod as `CNI_IFNAME` ([`setup`]), runs IPAM and applies the result
//! ([`ipam`]), and writes the device-info file ([`device_info`]). A VF bound to a DPDK driver is
//! configured on the PF and gets addresses, but nothing is moved or applied. DEL ([`del`]) undoes
//! all of it from the state file, also after a crash; a failed ADD does the same.

#![warn(missing_docs)]

pub mod add;
pub mod check;
pub mod config;
pub mod del;
pub mod device_info;
pub mod error;
pub mod ipam;
pub mod pf;
pub mod plugin;
pub mod setup;
pub mod state;
pub mod sysfs;
