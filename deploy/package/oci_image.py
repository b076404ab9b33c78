#!/usr/bin/env python3
"""Writes deskgate's container image as one archive, with no registry and no container engine.

The image is FROM scratch: the deskgate binary, the shared libraries it links (as `ldd`
names them: glibc, libm, libgcc_s, the loader), the CA bundle, passwd/group/nsswitch for a
non-root user and DNS, the package's config, and `configurable-http-proxy` on PATH. The
archive is an OCI image layout (`podman load`, `skopeo`) that also carries Docker's
`manifest.json` (`docker load`). Deterministic: the same inputs give the same digests.

    oci_image.py --tree PKGROOT --version 0.1.0 --out target/oci/deskgate-0.1.0.tar
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile

UID = 10001
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def linked_libraries(binary):
    """Absolute paths of the shared objects `binary` loads, as the loader looks them up."""
    out = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                paths.append(target)
        elif parts and parts[0].startswith("/"):
            paths.append(parts[0])  # the loader itself
    return paths


class Layer:
    def __init__(self, mtime):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)
        self.mtime = mtime
        self.dirs = set()

    def _info(self, name, kind, mode, uid=0):
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type, info.mode, info.mtime = kind, mode, self.mtime
        info.uid = info.gid = uid
        return info

    def dir(self, path, mode=0o755, uid=0):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                last = i == len(parts)
                self.tar.addfile(self._info(d, tarfile.DIRTYPE, mode if last else 0o755, uid if last else 0))

    def file(self, path, data, mode=0o644):
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def link(self, path, target):
        self.dir(os.path.dirname(path))
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def close(self):
        self.tar.close()
        return self.buf.getvalue()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def root_filesystem(tree, mtime):
    layer = Layer(mtime)
    binary = os.path.join(tree, "usr/bin/deskgate")
    layer.file("/usr/bin/deskgate", read(binary), 0o755)
    # JupyterHub's proxy pod and compose files start `configurable-http-proxy ...`.
    layer.link("/usr/bin/configurable-http-proxy", "deskgate")
    layer.link("/usr/lib/deskgate/configurable-http-proxy", "../../bin/deskgate")
    for lib in linked_libraries(binary):
        layer.file(lib, read(os.path.realpath(lib)), 0o755)
    layer.file(CA_BUNDLE, read(CA_BUNDLE))
    layer.file("/etc/passwd", f"root:x:0:0:root:/root:/usr/sbin/nologin\ndeskgate:x:{UID}:{UID}:deskgate:/var/lib/deskgate:/usr/sbin/nologin\n".encode())
    layer.file("/etc/group", f"root:x:0:\ndeskgate:x:{UID}:\n".encode())
    # glibc's own files and dns lookups (built into libc since 2.34: no libnss_* to copy).
    layer.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    layer.file("/etc/hosts", b"127.0.0.1 localhost\n::1 localhost ip6-localhost\n")
    layer.file("/etc/deskgate/deskgate.yaml", read(os.path.join(tree, "etc/deskgate/deskgate.yaml")))
    layer.dir("/var/lib/deskgate", 0o750, UID)
    # deskgate's default pid file lives in the temp dir.
    layer.dir("/tmp", 0o1777)
    return layer.close()


def blob(files, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    files["blobs/sha256/" + digest.split(":")[1]] = data
    return {"digest": digest, "size": len(data)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", required=True, help="the package's file tree")
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

    layer_tar = root_filesystem(args.tree, mtime)
    files = {}
    layer = blob(files, gzip.compress(layer_tar, mtime=mtime))
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    created = "1970-01-01T00:00:00Z" if mtime == 0 else None
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created or __import__("datetime").datetime.utcfromtimestamp(mtime).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {
            "User": f"{UID}:{UID}",
            "Entrypoint": ["/usr/bin/deskgate"],
            "Cmd": ["-c", "/etc/deskgate/deskgate.yaml"],
            "WorkingDir": "/var/lib/deskgate",
            "Env": ["PATH=/usr/bin", f"SSL_CERT_FILE={CA_BUNDLE}"],
            "ExposedPorts": {"8080/tcp": {}, "8443/tcp": {}, "8000/tcp": {}, "8001/tcp": {}},
            "Labels": {
                "org.opencontainers.image.title": "deskgate",
                "org.opencontainers.image.version": args.version,
                "org.opencontainers.image.licenses": "Apache-2.0",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer_tar).hexdigest()]},
        "history": [{"created_by": "deploy/package/oci_image.py (FROM scratch)"}],
    }
    config_desc = blob(files, json.dumps(config, sort_keys=True).encode())
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer],
    }
    manifest_desc = blob(files, json.dumps(manifest, sort_keys=True).encode())
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    name = f"localhost/deskgate:{args.version}"
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": args.version,
    }
    files["oci-layout"] = json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
    files["index.json"] = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc]},
        sort_keys=True,
    ).encode()
    files["manifest.json"] = json.dumps(
        [{"Config": "blobs/sha256/" + config_desc["digest"].split(":")[1], "RepoTags": [name],
          "Layers": ["blobs/sha256/" + layer["digest"].split(":")[1]]}]
    ).encode()

    out = Layer(mtime)
    for path in sorted(files):
        out.file(path, files[path])
    with open(args.out, "wb") as f:
        f.write(out.close())
    print(f"image {name}: {len(layer_tar) // 1024} KiB unpacked, {os.path.getsize(args.out) // 1024} KiB archive")


if __name__ == "__main__":
    main()
