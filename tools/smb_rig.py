"""A real SMB share for tests and benchmarks: Samba's smbd on loopback, mounted through a FUSE SMB client, and a
camera that writes frames over its own SMB session.

- `SambaServer`: Debian's `smbd` with its own smb.conf, state, locks and password database in a temp folder,
  listening on 127.0.0.1 on a free port (never the host's 445), one share `frames`.
- `SmbMount`: the share mounted with Debian's `smbnetfs` (FUSE; this kernel may have no cifs module), as the
  module's INPUT_DIR sees it: `<mount>/<host>:<port>/frames`, a `fuse.smbnetfs` mount (polled, attributes
  cached by FUSE).
- `SmbCamera`: the line PC, with `smbprotocol`: in-place writers that write a frame in 48 KiB chunks under its
  final name with the share mode a Windows program uses (others may read only: a rename fails while it writes)
  or the one Linux's cifs client uses (others may read, write and delete: a rename succeeds mid-write), and
  writers that upload under a temp name and rename.

Anything that cannot start raises `SmbRigError` with the reason and the log tail: tests fail, never skip.
`python -m tools.smb_rig` starts the rig and prints the mount path until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

SHARE = "frames"
CHUNK = 48 * 1024  # what a Windows copy or a camera SDK writes per call, roughly
WINDOWS_SHARE_MODE = "r"  # FILE_SHARE_READ: others may read; a rename or delete is a sharing violation
LINUX_CIFS_SHARE_MODE = "rwd"  # FILE_SHARE_READ|WRITE|DELETE, as Linux's cifs client opens files


class SmbRigError(RuntimeError):
    """smbd or the FUSE mount is missing or did not start."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(host: str, port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class SambaServer:
    """smbd on 127.0.0.1:<free port> serving `<workdir>/share` as `frames`, user `camera`-style login as root."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.port = _free_port(host)
        self.user = "root"  # the sandbox's only account; smbd maps the SMB login onto it
        self.password = secrets.token_hex(12)
        self.share_dir = workdir / "share"
        self.config = workdir / "smb.conf"
        self.log_path = workdir / "smbd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> None:
        d = self.workdir
        for sub in ("run", "lock", "state", "cache", "private", "share"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    "[global]",
                    "  server role = standalone server",
                    "  workgroup = WORKGROUP",
                    "  netbios name = EDGERIG",
                    f"  interfaces = {self.host}",
                    "  bind interfaces only = yes",
                    f"  smb ports = {self.port}",
                    "  disable netbios = yes",
                    "  server min protocol = SMB2_10",
                    f"  pid directory = {d}/run",
                    f"  lock directory = {d}/lock",
                    f"  state directory = {d}/state",
                    f"  cache directory = {d}/cache",
                    f"  private dir = {d}/private",
                    f"  ncalrpc dir = {d}/run/ncalrpc",
                    f"  passdb backend = tdbsam:{d}/private/passdb.tdb",
                    "  log level = 1",
                    "  load printers = no",
                    "  printing = bsd",
                    "  printcap name = /dev/null",
                    "  disable spoolss = yes",
                    "  ea support = no",
                    f"[{SHARE}]",
                    f"  path = {self.share_dir}",
                    "  read only = no",
                    "  create mask = 0644",
                    "",
                ]
            )
        )

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        if shutil.which("smbd") is None:
            raise SmbRigError("smbd is not installed (apt-get install samba, or `make apt-deps`)")
        if not self.config.exists():
            self._write_config()
            entered = subprocess.run(
                ["smbpasswd", "-c", str(self.config), "-s", "-a", self.user],
                input=f"{self.password}\n{self.password}\n".encode(),
                capture_output=True,
                timeout=30,
            )
            if entered.returncode != 0:
                raise SmbRigError(f"smbpasswd failed: {entered.stderr.decode(errors='replace')}")
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its per-connection children are in its group: `stop` ends them all
            )
        if not _wait_port(self.host, self.port, time.monotonic() + timeout) or not self.running:
            self.stop()
            raise SmbRigError(f"smbd did not listen on {self.host}:{self.port}; log:\n{_tail(self.log_path)}")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop smbd and every connection it serves (the share goes away for its clients)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the children of its process group end with it
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


class SmbMount:
    """The share mounted through smbnetfs (FUSE) at `<workdir>/mnt`; `path` is the share's folder in it."""

    def __init__(self, workdir: Path, server: SambaServer) -> None:
        self.workdir = workdir
        self.server = server
        self.point = workdir / "mnt"
        self.home = workdir / "home"
        self.log_path = workdir / "smbnetfs.log"
        self.path = self.point / f"{server.host}:{server.port}" / SHARE
        self._proc: subprocess.Popen[bytes] | None = None

    def mount(self, timeout: float = 15.0) -> None:
        if shutil.which("smbnetfs") is None:
            raise SmbRigError("smbnetfs is not installed (apt-get install smbnetfs, or `make apt-deps`)")
        if not os.path.exists("/dev/fuse"):
            raise SmbRigError("/dev/fuse is missing: FUSE mounts are not possible here")
        conf_dir = self.home / ".smb"
        conf_dir.mkdir(parents=True, exist_ok=True)
        self.point.mkdir(parents=True, exist_ok=True)
        (conf_dir / "smb.conf").write_text("[global]\n  client min protocol = SMB2_10\n  disable netbios = yes\n")
        conf = conf_dir / "smbnetfs.conf"
        conf.write_text(
            "\n".join(
                [
                    f'auth "{self.server.user}" "{self.server.password}"',  # the default login: this mount has one host
                    'smb_query_browsers "false"',
                    'use_libsecret "false"',
                    'stat_workaround_enable_default_entries "false"',
                    "stat_workaround_depth 0",
                    "smb_timeout 5000",  # a stopped server is an error after 5 s, not 20
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        env = {**os.environ, "HOME": str(self.home)}
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                ["smbnetfs", str(self.point), "-f", "-o", f"config={conf},log_file={self.log_path}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if self.path.is_dir():
                    return
            time.sleep(0.1)
        self.unmount()
        raise SmbRigError(f"smbnetfs did not mount {self.path}; log:\n{_tail(self.log_path)}")

    def unmount(self) -> None:
        subprocess.run(["fusermount", "-u", "-z", str(self.point)], capture_output=True, timeout=30)
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class SmbCamera:
    """A line PC writing frames over its own SMB session (smbprotocol)."""

    def __init__(self, server: SambaServer) -> None:
        import smbclient

        self._smb: Any = smbclient
        self.server = server
        self._register()

    def _register(self) -> None:
        s = self.server
        self._smb.register_session(s.host, username=s.user, password=s.password, port=s.port, encrypt=False)

    def reconnect(self) -> None:
        """After the server restarted: drop the dead session and log in again."""
        self._smb.reset_connection_cache()
        self._register()

    def unc(self, rel: str) -> str:
        return f"\\\\{self.server.host}\\{SHARE}\\" + rel.replace("/", "\\")

    def makedirs(self, rel_dir: str) -> None:
        if rel_dir:
            self._smb.makedirs(self.unc(rel_dir), exist_ok=True, port=self.server.port)

    def write_in_place(
        self, rel: str, data: bytes, *, share_access: str, pause: float = 0.1, chunk: int = CHUNK
    ) -> None:
        """Write `data` under its final name in chunks, pausing between them, holding the file open throughout."""
        self.makedirs(rel.rpartition("/")[0])
        with self._smb.open_file(self.unc(rel), mode="wb", share_access=share_access, port=self.server.port) as fh:
            for start in range(0, len(data), chunk):
                fh.write(data[start : start + chunk])
                fh.flush()
                if pause and start + chunk < len(data):
                    time.sleep(pause)

    def write_renamed(self, rel: str, data: bytes) -> None:
        """Upload under a temp name in the same folder, then rename into place (the recommended way)."""
        folder, _, name = rel.rpartition("/")
        self.makedirs(folder)
        tmp = f"{folder}/.{name}.part" if folder else f".{name}.part"
        with self._smb.open_file(self.unc(tmp), mode="wb", port=self.server.port) as fh:
            fh.write(data)
        self._smb.rename(self.unc(tmp), self.unc(rel), port=self.server.port)


class SmbRig:
    """smbd + the FUSE mount + a camera, in `workdir`; a context manager that undoes everything."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.server = SambaServer(workdir / "smbd")
        self.mount = SmbMount(workdir, self.server)
        self.camera: SmbCamera | None = None

    @property
    def input_dir(self) -> Path:
        return self.mount.path

    def __enter__(self) -> SmbRig:
        try:
            self.server.start()
            self.mount.mount()
            self.camera = SmbCamera(self.server)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.mount.unmount()
        self.server.stop()


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, SmbRig(Path(tmp)) as rig:
        print(f"SMB share mounted at {rig.input_dir} (smbd on {rig.server.host}:{rig.server.port}); Ctrl-C ends")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
