//! The deploy kit: the systemd unit verifies, the compose configs check, and the Dockerfile
//! agrees with the crate it builds and the image `deploy/package` makes. (No Docker engine runs
//! where the tests run, so the Dockerfile is read, not built; tests/package.rs runs the image
//! `deploy/package/build` writes.)

mod common;
use common::*;
use std::process::Command;

#[test]
fn systemd_unit_verifies() {
    // `systemd-analyze verify` needs the package, not a running systemd.
    require("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/deskgate.service"
    ))
    .unwrap();
    // Point ExecStart at the binary under test (the unit names /usr/local/bin/deskgate).
    let path = dir.path().join("deskgate.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/deskgate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("deskgate.service:"),
        "systemd-analyze verify: {text}"
    );
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
}

#[test]
fn compose_configs_pass_check() {
    for name in ["deskgate.compose.yaml", "deskgate.edges.yaml"] {
        let conf = format!("{}/deploy/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(BIN)
            .args(["-t", "--skip-files", "-c", &conf])
            .env("CONFIGPROXY_AUTH_TOKEN", "t")
            .env("HUB_API_KEY", "k")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One Dockerfile instruction: its keyword and the rest of its (joined) lines.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// `"key": VALUE` in the OCI image config `deploy/package/oci_image.py` writes.
fn oci_config_value<'a>(script: &'a str, key: &str) -> &'a str {
    let start = script
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("oci_image.py sets no {key}"))
        + key.len()
        + 4;
    let rest = &script[start..];
    &rest[..rest.find(",\n").unwrap()]
}

/// The Dockerfile's build stage copies everything `cargo build --locked` reads (Cargo.toml's
/// target paths, workspace members, patched crates) and builds the binary Cargo.toml names;
/// its image runs that binary as the user, in the folder and with the command of the image
/// `deploy/package` builds, and exposes only ports that image does.
#[test]
fn dockerfile_copies_what_the_build_reads_and_runs_like_the_packaged_image() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let dockerfile = instructions(&read("deploy/Dockerfile"));
    let manifest = read("Cargo.toml");
    let stages: Vec<&[(String, String)]> = {
        let starts: Vec<usize> = (0..dockerfile.len())
            .filter(|&i| dockerfile[i].0 == "FROM")
            .chain([dockerfile.len()])
            .collect();
        starts.windows(2).map(|w| &dockerfile[w[0]..w[1]]).collect()
    };
    assert_eq!(
        stages.len(),
        2,
        "a build stage and the image: {dockerfile:?}"
    );
    let (build, image) = (stages[0], stages[1]);
    let args = |stage: &[(String, String)], keyword: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a.clone())
            .collect()
    };
    assert!(build[0].1.ends_with(" AS build"), "{:?}", build[0]);

    // What the build stage copies, each of which exists in the repository.
    let copied: Vec<String> = args(build, "COPY")
        .iter()
        .flat_map(|a| {
            let words: Vec<&str> = a.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for source in &copied {
        assert!(
            root.join(source).exists(),
            "COPY {source}: not in the repository"
        );
    }
    // What cargo reads: the manifests, every `path = "..."` and workspace member.
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    for line in manifest.lines() {
        if let Some((_, rest)) = line.split_once("path = \"") {
            needed.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    let members = manifest
        .split_once("members = [")
        .map(|(_, rest)| &rest[..rest.find(']').unwrap()])
        .unwrap_or("");
    needed.extend(
        members
            .split(',')
            .map(|m| m.trim().trim_matches('"'))
            .filter(|m| !m.is_empty() && *m != ".")
            .map(str::to_string),
    );
    for path in &needed {
        assert!(
            copied
                .iter()
                .any(|c| path == c || path.starts_with(&format!("{c}/"))),
            "the build reads {path}, which the Dockerfile does not copy (it copies {copied:?})"
        );
    }
    let bin = manifest
        .split_once("[[bin]]\nname = \"")
        .map(|(_, rest)| &rest[..rest.find('"').unwrap()])
        .expect("Cargo.toml names its binary");
    let runs = args(build, "RUN").join("\n");
    assert!(
        runs.contains(&format!("cargo build --release --locked --bin {bin}")),
        "the build stage builds --bin {bin}: {runs}"
    );

    // The image: the binary built above, run like deploy/package's image.
    let workdir = args(build, "WORKDIR")
        .pop()
        .expect("the build stage's WORKDIR");
    let from_build = args(image, "COPY")
        .into_iter()
        .find(|a| a.starts_with("--from=build "))
        .expect("the image copies the binary from the build stage");
    let words: Vec<&str> = from_build.split_whitespace().collect();
    assert_eq!(words[1], format!("{workdir}/target/release/{bin}"));
    let entrypoint = args(image, "ENTRYPOINT").pop().unwrap();
    assert_eq!(entrypoint, format!("[\"{}\"]", words[2]));

    let oci = read("deploy/package/oci_image.py");
    let uid = oci
        .lines()
        .find_map(|l| l.strip_prefix("UID = "))
        .expect("oci_image.py's UID");
    assert_eq!(args(image, "USER"), [format!("{uid}:{uid}")]);
    let runs = args(image, "RUN").join("\n");
    assert!(runs.contains(&format!("--uid {uid} ")), "{runs}");
    let oci_workdir = oci_config_value(&oci, "WorkingDir").trim_matches('"');
    assert_eq!(args(image, "WORKDIR"), [oci_workdir]);
    assert!(
        runs.contains(oci_workdir),
        "the image makes {oci_workdir}: {runs}"
    );
    let cmd = args(image, "CMD").pop().unwrap();
    assert_eq!(cmd, oci_config_value(&oci, "Cmd"));
    let config_file = cmd
        .trim_matches(|c| "[]\"".contains(c))
        .rsplit("\", \"")
        .next()
        .unwrap();
    let config_dir = config_file.rsplit_once('/').unwrap().0;
    assert!(
        runs.contains(config_dir),
        "the image makes {config_dir}: {runs}"
    );
    let oci_ports = oci_config_value(&oci, "ExposedPorts");
    for port in args(image, "EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
    {
        assert!(
            oci_ports.contains(&format!("\"{port}/tcp\"")),
            "EXPOSE {port}: the packaged image exposes {oci_ports}"
        );
    }
}
