//! The plugin side of a call: read the environment and stdin, check them, run the command, and
//! print the result or the error object, as the specification says.

use std::io::{Read, Write};

use serde_json::{Map, Value};

use crate::env::{CniEnv, Command};
use crate::error::{CniError, ErrorCode};
use crate::version::{SpecVersion, LATEST, SUPPORTED_VERSIONS};

/// One checked request: environment, the exact stdin, and its parsed form.
#[derive(Debug, Clone)]
pub struct Request {
    /// The environment.
    pub env: CniEnv,
    /// Stdin as received.
    pub stdin: Vec<u8>,
    /// Stdin parsed (keys in their order).
    pub config: Map<String, Value>,
    /// The configuration's `cniVersion`.
    pub version: SpecVersion,
}

/// What a plugin does for each command. VERSION is answered by [`run`] itself.
pub trait Plugin {
    /// ADD: returns the result, already written at the request's version.
    fn add(&self, req: &Request) -> Result<Value, CniError>;
    /// DEL.
    fn del(&self, req: &Request) -> Result<(), CniError>;
    /// CHECK.
    fn check(&self, req: &Request) -> Result<(), CniError>;
    /// STATUS.
    fn status(&self, req: &Request) -> Result<(), CniError>;
    /// GC.
    fn gc(&self, req: &Request) -> Result<(), CniError>;
}

/// Runs the plugin on this process's environment, stdin and stdout and returns the exit code.
/// A panic is caught and reported as a CNI error too.
pub fn run(plugin: &dyn Plugin) -> i32 {
    std::panic::set_hook(Box::new(|info| {
        let err = CniError::new(ErrorCode::Other(999), format!("internal error: {info}"));
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string(&err).unwrap_or_default()
        );
    }));
    let env = CniEnv::from_process();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_with(env, &mut std::io::stdin(), &mut std::io::stdout(), plugin)
    }));
    outcome.unwrap_or(1)
}

/// As [`run`], with the environment, stdin and stdout given.
pub fn run_with(
    env: Result<CniEnv, CniError>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    plugin: &dyn Plugin,
) -> i32 {
    let mut input = Vec::new();
    let read = stdin.read_to_end(&mut input);
    let version_hint = version_hint(&input);
    let outcome = match (env, read) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(CniError::new(
            ErrorCode::IoFailure,
            format!("reading stdin: {e}"),
        )),
        (Ok(env), Ok(_)) => dispatch(env, input, plugin),
    };
    match outcome {
        Ok(Some(out)) => {
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string(&out).unwrap_or_default()
            );
            0
        }
        Ok(None) => 0,
        Err(mut e) => {
            if e.cni_version.is_empty() {
                e.cni_version = version_hint;
            }
            let _ = writeln!(stdout, "{}", serde_json::to_string(&e).unwrap_or_default());
            1
        }
    }
}

/// The version to write an error in: the request's, when it is one Plexus knows.
fn version_hint(input: &[u8]) -> String {
    serde_json::from_slice::<Value>(input)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| v.parse::<SpecVersion>().is_ok())
        .unwrap_or_else(|| LATEST.as_str().to_string())
}

fn dispatch(env: CniEnv, input: Vec<u8>, plugin: &dyn Plugin) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version_reply(&input)));
    }
    let req = parse_request(env, input)?;
    match req.env.command {
        Command::Add => plugin.add(&req).map(Some),
        Command::Del => plugin.del(&req).map(|_| None),
        Command::Check => {
            require(&req, req.version.has_check(), "CHECK")?;
            plugin.check(&req).map(|_| None)
        }
        Command::Status => {
            require(&req, req.version.has_status_and_gc(), "STATUS")?;
            plugin.status(&req).map(|_| None)
        }
        Command::Gc => {
            require(&req, req.version.has_status_and_gc(), "GC")?;
            plugin.gc(&req).map(|_| None)
        }
        Command::Version => unreachable_version(),
    }
}

fn unreachable_version() -> Result<Option<Value>, CniError> {
    Err(CniError::new(
        ErrorCode::InvalidEnvironment,
        "VERSION is answered before dispatch",
    ))
}

fn require(req: &Request, allowed: bool, what: &str) -> Result<(), CniError> {
    if allowed {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "config version {} does not allow {what}",
                req.version.as_str()
            ),
        ))
    }
}

/// VERSION's answer: the request's version (or the latest) and every supported version.
fn version_reply(input: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(input)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| LATEST.as_str().to_string());
    serde_json::json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}

/// Parses and checks stdin: a JSON object with a supported `cniVersion` and a `name`.
pub fn parse_request(env: CniEnv, input: Vec<u8>) -> Result<Request, CniError> {
    let config: Map<String, Value> = match serde_json::from_slice::<Value>(&input) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(CniError::new(
                ErrorCode::DecodingFailure,
                "network configuration on stdin must be a JSON object",
            ))
        }
        Err(e) => {
            return Err(CniError::new(
                ErrorCode::DecodingFailure,
                format!("network configuration on stdin is not valid JSON: {e}"),
            ))
        }
    };
    let version = match config.get("cniVersion") {
        None | Some(Value::Null) => SpecVersion::V0_1_0,
        Some(Value::String(v)) if v.is_empty() => SpecVersion::V0_1_0,
        Some(Value::String(v)) => v
            .parse()
            .map_err(|e| CniError::new(ErrorCode::IncompatibleVersion, format!("{e}")))?,
        Some(_) => {
            return Err(CniError::new(
                ErrorCode::DecodingFailure,
                "\"cniVersion\" must be a string",
            ))
        }
    };
    match config.get("name") {
        Some(Value::String(n)) if !n.is_empty() => {}
        _ => {
            return Err(CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "missing network name",
            ))
        }
    }
    Ok(Request {
        env,
        stdin: input,
        config,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Echo;
    impl Plugin for Echo {
        fn add(&self, req: &Request) -> Result<Value, CniError> {
            Ok(serde_json::json!({"cniVersion": req.version.as_str()}))
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn status(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn gc(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn call(vars: &[(&str, &str)], stdin: &str) -> (i32, Value) {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = CniEnv::from_lookup(|k| m.get(k).cloned());
        let mut out = Vec::new();
        let code = run_with(env, &mut stdin.as_bytes(), &mut out, &Echo);
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).unwrap()
        };
        (code, v)
    }

    const ADD: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn answers_version() {
        let (code, v) = call(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"0.4.0"}"#);
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    }

    #[test]
    fn reports_errors_as_json() {
        let cases: &[(&str, u64)] = &[
            ("not json", 6),
            ("[1]", 6),
            (r#"{"cniVersion":"1.0.0"}"#, 7),
            (r#"{"cniVersion":"5.0.0","name":"n"}"#, 1),
            (r#"{"cniVersion":7,"name":"n"}"#, 6),
        ];
        for (stdin, want) in cases {
            let (code, v) = call(&ADD, stdin);
            assert_eq!(code, 1);
            assert_eq!(v["code"].as_u64(), Some(*want), "{stdin}");
            assert!(v["msg"].as_str().is_some());
        }
        let (code, v) = call(&[("CNI_COMMAND", "ADD")], "{}");
        assert_eq!(code, 1);
        assert_eq!(v["code"].as_u64(), Some(4));
    }

    #[test]
    fn gates_commands_by_version() {
        let mut check = ADD.to_vec();
        check[0] = ("CNI_COMMAND", "CHECK");
        let (code, v) = call(&check, r#"{"cniVersion":"0.3.1","name":"n"}"#);
        assert_eq!((code, v["code"].as_u64()), (1, Some(1)));
        let (code, _) = call(&check, r#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!(code, 0);
        let (code, _) = call(
            &[("CNI_COMMAND", "STATUS")],
            r#"{"cniVersion":"1.1.0","name":"n"}"#,
        );
        assert_eq!(code, 0);
    }
}
