//! Debian's OpenSSH sshd, chrooted SFTP on a loopback port.

use super::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The throwaway system user the test sshd lets in (created by the tests, as root).
pub const SFTP_USER: &str = "dqpipe-sftp";

/// Debian's OpenSSH `sshd` on a loopback port, SFTP only, chrooted; stopped on drop.
/// Keys in `base`: `id_ed25519` (OpenSSH format) and `id_rsa_pem` (PEM) are authorized,
/// `id_other` is not; `known_hosts` holds the server's host key, `known_hosts_other` a
/// different one. Files land in `landing()`.
pub struct Sshd {
    pub base: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl Sshd {
    pub fn start() -> Sshd {
        use std::os::unix::fs::PermissionsExt;
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(out.status.success(), "{cmd:?}: {}{}", stdout(&out), stderr(&out));
        };
        if !Command::new("id").arg(SFTP_USER).output().is_ok_and(|o| o.status.success()) {
            run(Command::new("useradd").args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SFTP_USER,
            ]));
        }
        // An unlocked account without a password: sshd (without PAM) refuses locked ones.
        run(Command::new("usermod").args(["-p", "*", SFTP_USER]));
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        // The chroot and every folder above it must be root's and not writable by others.
        let base = tempfile::Builder::new().prefix("dqpipe-sftp-").tempdir_in("/run").expect("a folder under /run");
        let b = base.path();
        std::fs::set_permissions(b, std::fs::Permissions::from_mode(0o755)).unwrap();
        let landing = b.join("chroot/landing");
        std::fs::create_dir_all(&landing).unwrap();
        std::fs::set_permissions(b.join("chroot"), std::fs::Permissions::from_mode(0o755)).unwrap();
        run(Command::new("chown").arg(format!("{SFTP_USER}:")).arg(&landing));
        for (name, args) in [
            ("host_ed25519", vec!["-t", "ed25519"]),
            ("other_host", vec!["-t", "ed25519"]),
            ("id_ed25519", vec!["-t", "ed25519"]),
            ("id_rsa_pem", vec!["-t", "rsa", "-b", "2048", "-m", "PEM"]),
            ("id_other", vec!["-t", "ed25519"]),
        ] {
            run(Command::new("ssh-keygen").args(["-q", "-N", "", "-f"]).arg(b.join(name)).args(args));
        }
        let pubkey = |n: &str| std::fs::read_to_string(b.join(format!("{n}.pub"))).unwrap();
        std::fs::write(b.join("authorized_keys"), pubkey("id_ed25519") + &pubkey("id_rsa_pem")).unwrap();
        let port = free_port();
        std::fs::write(b.join("known_hosts"), format!("[127.0.0.1]:{port} {}", pubkey("host_ed25519"))).unwrap();
        std::fs::write(b.join("known_hosts_other"), format!("[127.0.0.1]:{port} {}", pubkey("other_host"))).unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {b}/host_ed25519\nPidFile {b}/sshd.pid\n\
             AuthorizedKeysFile {b}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\nAllowUsers {SFTP_USER}\n\
             Subsystem sftp internal-sftp\nChrootDirectory {b}/chroot\nForceCommand internal-sftp\n\
             AllowTcpForwarding no\nX11Forwarding no\nLogLevel VERBOSE\n",
            b = b.display()
        );
        std::fs::write(b.join("sshd_config"), config).unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(b.join("sshd_config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(b.join("sshd.log")).unwrap())
            .spawn()
            .expect("/usr/sbin/sshd (scripts/test installs openssh-server)");
        if listening(&mut child, port) {
            return Sshd { base, port, child };
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("sshd did not listen: {}", std::fs::read_to_string(b.join("sshd.log")).unwrap_or_default());
    }

    pub fn landing(&self) -> PathBuf {
        self.base.path().join("chroot/landing")
    }

    pub fn url(&self) -> String {
        format!("sftp://{SFTP_USER}@127.0.0.1:{}/landing", self.port)
    }

    pub fn file(&self, name: &str) -> String {
        self.base.path().join(name).to_string_lossy().into_owned()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Dates every file in `dir` two minutes back: files that landed a while ago, past the
/// SFTP store's `min_age_secs` (60), which leaves younger ones for a later run.
pub fn settle_files(dir: &Path) {
    let then = std::time::SystemTime::now() - Duration::from_secs(120);
    for f in all_files_under(dir) {
        let file = std::fs::File::options().write(true).open(dir.join(&f)).expect("a landed file");
        file.set_modified(then).expect("setting a file's modification time");
    }
}
