//! The deployment files in `deploy/` against the real `tandem` binary: every
//! command line a container (or the Dockerfile) runs is handed to
//! `tandem … --check-config`, so a renamed or removed flag fails here rather
//! than in a cluster. The other tests keep the manifests consistent with
//! themselves: environment references resolve, the per-role worker
//! DaemonSets stay copies of one another, Services find their pods.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_norway::{Mapping, Value};

/// Longest one `--check-config` may take: it parses flags and exits.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The roles of worker DaemonSets in `deploy/k8s/base`, each a copy of the others.
const WORKER_ROLES: [&str; 3] = ["prefill", "decode", "both"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `path` as `deploy/…`, for messages.
fn shown(path: &Path) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    path.strip_prefix(&repo)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One YAML document and the file it came from.
struct Doc {
    file: PathBuf,
    value: Value,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Every document of every YAML file under `dir`; a file that does not parse fails the test.
fn load_docs(dir: &Path) -> Vec<Doc> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for de in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(de)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", shown(&file)));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().expect("command/args entries are strings").into())
                .collect()
        })
        .unwrap_or_default()
}

/// Every container mapping anywhere in `v` (pod templates of any workload kind).
fn containers<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let key = k.as_str().unwrap_or_default();
                if matches!(key, "containers" | "initContainers") {
                    if let Some(seq) = child.as_sequence() {
                        out.extend(seq.iter().filter(|c| c.is_mapping()));
                        continue;
                    }
                }
                containers(child, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|c| containers(c, out)),
        _ => {}
    }
}

/// The final stage's exec-form ENTRYPOINT and CMD of `deploy/Dockerfile`.
fn dockerfile_entrypoint_and_cmd() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let (mut entrypoint, mut cmd) = (Vec::new(), Vec::new());
    for line in text.lines().map(str::trim) {
        let Some((word, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let target = match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                entrypoint.clear();
                cmd.clear();
                continue;
            }
            "ENTRYPOINT" => &mut entrypoint,
            "CMD" => &mut cmd,
            _ => continue,
        };
        *target = serde_json::from_str(rest.trim()).unwrap_or_else(|e| {
            panic!("deploy/Dockerfile: write `{line}` in exec form (a JSON array): {e}")
        });
    }
    (entrypoint, cmd)
}

/// Kubernetes' `$(VAR)` expansion: `$$` is a literal `$`; a reference to an
/// unset variable is an error here (Kubernetes would pass it on verbatim).
fn expand(s: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            let end = inner
                .find(')')
                .ok_or_else(|| format!("unclosed $( in {s:?}"))?;
            let name = &inner[..end];
            let value = env
                .get(name)
                .ok_or_else(|| format!("$({name}) in {s:?} names no env var of the container"))?;
            out.push_str(value);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Stand-ins for values only a running cluster knows.
fn field_ref_placeholder(field_path: &str) -> &'static str {
    match field_path {
        "status.podIP" | "status.hostIP" => "10.0.0.2",
        "spec.nodeName" => "node-1",
        "metadata.namespace" => "default",
        _ => "placeholder",
    }
}

/// A container's environment as the kubelet builds it, with ConfigMap keys
/// read from the ConfigMaps in `deploy/` and placeholders for Secrets and
/// pod fields.
fn container_env(
    container: &Value,
    config_maps: &HashMap<String, Mapping>,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    let Some(list) = container.get("env").and_then(Value::as_sequence) else {
        return Ok(env);
    };
    for var in list {
        let name = str_at(var, &["name"]).ok_or("an env entry without a name")?;
        let optional = |r: &Value| r.get("optional").and_then(Value::as_bool) == Some(true);
        let value = if let Some(v) = var.get("value") {
            let text = match v {
                Value::String(s) => s.clone(),
                other => return Err(format!("env {name}: value must be a string, got {other:?}")),
            };
            Some(expand(&text, &env)?)
        } else if let Some(r) = var.get("valueFrom").and_then(|f| f.get("configMapKeyRef")) {
            let (cm, key) = (
                str_at(r, &["name"]).unwrap_or_default(),
                str_at(r, &["key"]).unwrap_or_default(),
            );
            let found = config_maps
                .get(cm)
                .and_then(|data| data.get(key))
                .and_then(Value::as_str)
                .map(String::from);
            match found {
                None if !optional(r) => {
                    return Err(format!(
                        "env {name}: ConfigMap {cm:?} key {key:?} is not in deploy/"
                    ))
                }
                found => found,
            }
        } else if let Some(r) = var.get("valueFrom").and_then(|f| f.get("secretKeyRef")) {
            // Secrets are created by the operator, not shipped: a stand-in,
            // unless optional (then absent, the case the CLI must accept).
            (!optional(r)).then(|| format!("placeholder-secret-{name}"))
        } else if let Some(path) = str_at(var, &["valueFrom", "fieldRef", "fieldPath"]) {
            Some(field_ref_placeholder(path).to_string())
        } else {
            return Err(format!("env {name}: unsupported source"));
        };
        if let Some(value) = value {
            env.insert(name.to_string(), value);
        }
    }
    Ok(env)
}

/// One `tandem` invocation found in `deploy/`, ready to run.
#[derive(Debug)]
struct CommandLine {
    origin: String,
    /// Arguments after the program name.
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

impl CommandLine {
    fn subcommand(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or_default()
    }

    fn role(&self) -> Option<&str> {
        let i = self
            .args
            .iter()
            .position(|a| a == "--role" || a.starts_with("--role="))?;
        match self.args[i].strip_prefix("--role=") {
            Some(role) => Some(role),
            None => self.args.get(i + 1).map(String::as_str),
        }
    }
}

fn invokes_tandem(program: &str) -> bool {
    Path::new(program).file_name().and_then(|n| n.to_str()) == Some("tandem")
}

/// Every `tandem` command line of every container in `deploy/` and the
/// Dockerfile's default command, with `$(VAR)` references resolved.
fn tandem_command_lines() -> Vec<CommandLine> {
    let docs = load_docs(&deploy_dir());
    let config_maps: HashMap<String, Mapping> = docs
        .iter()
        .filter(|d| str_at(&d.value, &["kind"]) == Some("ConfigMap"))
        .filter_map(|d| {
            let name = str_at(&d.value, &["metadata", "name"])?.to_string();
            Some((name, d.value.get("data")?.as_mapping()?.clone()))
        })
        .collect();
    let (entrypoint, cmd) = dockerfile_entrypoint_and_cmd();
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    for doc in &docs {
        let mut found = Vec::new();
        containers(&doc.value, &mut found);
        for c in found {
            let name = str_at(c, &["name"]).unwrap_or("?");
            let origin = format!("{} container {name}", shown(&doc.file));
            let mut argv = strings(c.get("command"));
            if argv.is_empty() && str_at(c, &["image"]).is_some_and(|i| i.contains("tandem")) {
                argv = entrypoint.clone();
            }
            argv.extend(strings(c.get("args")));
            if !argv.first().is_some_and(|p| invokes_tandem(p)) {
                continue;
            }
            let resolved = container_env(c, &config_maps).and_then(|env| {
                let args = argv[1..]
                    .iter()
                    .map(|a| expand(a, &env))
                    .collect::<Result<_, _>>()?;
                Ok(CommandLine {
                    origin: origin.clone(),
                    args,
                    env,
                })
            });
            match resolved {
                Ok(line) => lines.push(line),
                Err(e) => failures.push(format!("{origin}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let docker: Vec<String> = entrypoint.iter().chain(&cmd).cloned().collect();
    if docker.len() > 1 && invokes_tandem(&docker[0]) {
        lines.push(CommandLine {
            origin: "deploy/Dockerfile ENTRYPOINT + CMD".into(),
            args: docker[1..].to_vec(),
            env: BTreeMap::new(),
        });
    }
    lines
}

/// Runs `tandem ARGS --check-config` with the container's environment (and
/// none of the test's own TANDEM_* variables); Err carries stderr. Stdout is
/// dropped and stderr read on a thread, so a chatty child cannot block.
fn check_config(line: &CommandLine) -> Result<(), String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.args(&line.args)
        .arg("--check-config")
        .envs(&line.env)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("TANDEM_") && !line.env.contains_key(&key) {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("start tandem");
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > CHECK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "still running after {CHECK_TIMEOUT:?}: --check-config must only validate"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr.join().unwrap();
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status}\n{}", stderr.trim_end()))
    }
}

#[test]
fn every_tandem_command_line_passes_check_config() {
    let lines = tandem_command_lines();
    let failures: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            check_config(line).err().map(|e| {
                format!(
                    "{}:\n  tandem {} --check-config\n  {e}",
                    line.origin,
                    line.args.join(" ")
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} command lines in deploy/ are refused by the CLI:\n\n{}",
        failures.len(),
        lines.len(),
        failures.join("\n\n")
    );
}

#[test]
fn manifests_start_prefill_decode_workers_and_a_router() {
    let lines = tandem_command_lines();
    let roles: Vec<(&str, Option<&str>)> =
        lines.iter().map(|l| (l.subcommand(), l.role())).collect();
    for role in ["prefill", "decode"] {
        assert!(
            roles.contains(&("worker", Some(role))),
            "no `tandem worker --role {role}` in deploy/: {roles:?}"
        );
    }
    assert!(
        roles.iter().any(|(sub, _)| *sub == "router"),
        "no `tandem router` in deploy/: {roles:?}"
    );
}

#[test]
fn every_manifest_parses_as_kubernetes_objects() {
    let docs = load_docs(&deploy_dir().join("k8s"));
    assert!(
        docs.len() >= 10,
        "expected the base manifests, found {}",
        docs.len()
    );
    for doc in &docs {
        for field in ["apiVersion", "kind"] {
            assert!(
                str_at(&doc.value, &[field]).is_some(),
                "{}: a document without {field}",
                shown(&doc.file)
            );
        }
        let kind = str_at(&doc.value, &["kind"]).unwrap();
        assert!(
            matches!(kind, "Kustomization" | "Component")
                || str_at(&doc.value, &["metadata", "name"]).is_some(),
            "{}: {kind} without metadata.name",
            shown(&doc.file)
        );
        assert!(
            str_at(&doc.value, &["metadata", "namespace"]).is_none(),
            "{}: manifests stay namespace-agnostic (no metadata.namespace)",
            shown(&doc.file)
        );
    }
}

fn base_objects(kind: &str) -> Vec<Value> {
    load_docs(&deploy_dir().join("k8s/base"))
        .into_iter()
        .filter(|d| str_at(&d.value, &["kind"]) == Some(kind))
        .map(|d| d.value)
        .collect()
}

fn named<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| str_at(o, &["metadata", "name"]) == Some(name))
        .unwrap_or_else(|| panic!("no object named {name} in deploy/k8s/base"))
}

#[test]
fn worker_daemonsets_differ_only_in_their_role() {
    let daemonsets = base_objects("DaemonSet");
    let normalized: Vec<(String, String)> = WORKER_ROLES
        .iter()
        .map(|role| {
            let ds = named(&daemonsets, &format!("tandem-{role}"));
            let text = serde_norway::to_string(ds).unwrap();
            (role.to_string(), text.replace(role, "ROLE"))
        })
        .collect();
    let (first_role, first) = &normalized[0];
    for (role, text) in &normalized[1..] {
        let differing: Vec<String> = first
            .lines()
            .zip(text.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("  worker-{first_role}: {a}\n  worker-{role}: {b}"))
            .collect();
        assert!(
            differing.is_empty() && first.lines().count() == text.lines().count(),
            "worker-{role}.yaml drifted from worker-{first_role}.yaml beyond the role name \
             (role names shown as ROLE):\n{}",
            differing.join("\n")
        );
    }
    for role in WORKER_ROLES {
        let ds = named(&daemonsets, &format!("tandem-{role}"));
        let spec = ds.get("spec").and_then(|s| s.get("template")).unwrap();
        assert_eq!(
            str_at(spec, &["spec", "nodeSelector", "tandem.dev/role"]),
            Some(role),
            "tandem-{role} must run on nodes labelled tandem.dev/role={role}"
        );
    }
}

/// Pod templates (labels, containers) of the base workloads.
fn pod_templates() -> Vec<Value> {
    ["DaemonSet", "Deployment"]
        .iter()
        .flat_map(|k| base_objects(k))
        .map(|w| w.get("spec").unwrap().get("template").unwrap().clone())
        .collect()
}

#[test]
fn services_select_pods_and_router_urls_name_services() {
    let services = base_objects("Service");
    let templates = pod_templates();
    let mut ports: HashMap<String, Vec<u64>> = HashMap::new();
    for svc in &services {
        let name = str_at(svc, &["metadata", "name"]).unwrap();
        let selector = svc
            .get("spec")
            .and_then(|s| s.get("selector"))
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("Service {name} has no selector"));
        let selected = templates.iter().any(|t| {
            let labels = t.get("metadata").and_then(|m| m.get("labels"));
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        });
        assert!(selected, "Service {name} selects no pod template");
        let spec_ports = svc.get("spec").unwrap().get("ports").unwrap();
        ports.insert(
            name.to_string(),
            spec_ports
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|p| p.get("port").and_then(Value::as_u64))
                .collect(),
        );
    }
    for role in WORKER_ROLES {
        let svc = named(&services, &format!("tandem-{role}"));
        assert_eq!(
            str_at(svc, &["spec", "clusterIP"]),
            Some("None"),
            "tandem-{role} must be headless so its name resolves to every worker"
        );
    }
    let router = tandem_command_lines()
        .into_iter()
        .find(|l| l.subcommand() == "router")
        .expect("a router command line");
    for flag in ["--prefill=", "--decode=", "--worker="] {
        for arg in router.args.iter().filter(|a| a.starts_with(flag)) {
            let url = &arg[flag.len()..];
            let authority = url
                .strip_prefix("http://")
                .expect("worker URLs are http://");
            let (host, port) = authority.trim_end_matches('/').split_once(':').unwrap();
            let port: u64 = port.parse().unwrap();
            assert!(
                ports.get(host).is_some_and(|p| p.contains(&port)),
                "router {arg}: no Service {host} with port {port} in deploy/k8s/base"
            );
        }
    }
}

#[test]
fn probes_and_scrape_annotations_use_the_serving_port() {
    for template in pod_templates() {
        let annotations = template.get("metadata").unwrap().get("annotations");
        let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
        assert_eq!(annotation("prometheus.io/scrape"), Some("true"));
        assert_eq!(annotation("prometheus.io/path"), Some("/metrics"));
        let mut found = Vec::new();
        containers(&template, &mut found);
        let c = found[0];
        let port = c.get("ports").unwrap().as_sequence().unwrap()[0].clone();
        let number = port.get("containerPort").and_then(Value::as_u64).unwrap();
        assert_eq!(annotation("prometheus.io/port"), Some(&*number.to_string()));
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let get = c.get(probe).and_then(|p| p.get("httpGet"));
            assert_eq!(
                get.and_then(|g| g.get("path")).and_then(Value::as_str),
                Some("/health"),
                "{probe} must GET /health"
            );
            assert_eq!(get.and_then(|g| g.get("port")), port.get("name"));
        }
        assert_eq!(
            c.get("securityContext")
                .and_then(|s| s.get("readOnlyRootFilesystem"))
                .and_then(Value::as_bool),
            Some(true)
        );
    }
}

#[test]
fn the_image_runs_as_the_user_the_manifests_expect() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let user = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("the Dockerfile sets USER");
    let uid: u64 = user.split(':').next().unwrap().trim().parse().unwrap();
    for template in pod_templates() {
        assert_eq!(
            template
                .get("spec")
                .and_then(|s| s.get("securityContext"))
                .and_then(|s| s.get("runAsUser"))
                .and_then(Value::as_u64),
            Some(uid)
        );
    }
}

#[test]
fn env_expansion_follows_kubernetes_rules() {
    let env = BTreeMap::from([("A".to_string(), "x".to_string())]);
    assert_eq!(expand("--m=$(A)/y", &env).unwrap(), "--m=x/y");
    assert_eq!(expand("$$(A) $5", &env).unwrap(), "$(A) $5");
    assert!(expand("$(B)", &env).is_err());
    assert!(expand("$(A", &env).is_err());
}
