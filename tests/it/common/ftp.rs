//! Debian's vsftpd on 127.0.0.1, anonymous, for the FTP source: its folder `landing`
//! (owned by the `ftp` user, so files can be deleted) under a root it chroots into.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{free_port, listening};

pub struct Vsftpd {
    pub root: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Vsftpd {
    pub fn start() -> Vsftpd {
        Vsftpd::start_with(false, "")
    }

    /// The same server allowing at most `n` connections from one address (vsftpd's
    /// `max_per_ip`): more are answered 421.
    pub fn start_limited(n: usize) -> Vsftpd {
        Vsftpd::start_with(false, &format!("max_per_ip={n}\n"))
    }

    /// The same server requiring TLS (FTPS, explicit) for logins and data, with a
    /// certificate for 127.0.0.1 signed by [`Vsftpd::ca`].
    pub fn start_tls() -> Vsftpd {
        Vsftpd::start_with(true, "")
    }

    fn start_with(tls: bool, extra: &str) -> Vsftpd {
        let root = tempfile::tempdir().expect("temp dir");
        let ftp_root = root.path().join("root");
        let landing = ftp_root.join("landing");
        let empty = root.path().join("empty");
        for d in [&ftp_root, &landing, &empty] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        // The anonymous user writes (deletes) in `landing` only; its root stays root's.
        let chown = Command::new("chown").args(["ftp:ftp"]).arg(&landing).status().expect("chown");
        assert!(chown.success(), "cannot give {} to the ftp user (the tests run as root)", landing.display());
        let port = free_port();
        // Passive ports: one per transfer at once (fetch runs several); a range above a
        // free port, which the test's other servers, on ports the kernel picks, avoid.
        let pasv = free_port().min(65_000);
        let mut ssl = String::new();
        if tls {
            super::test_certificates(root.path());
            ssl = format!(
                "ssl_enable=YES\nallow_anon_ssl=YES\nforce_anon_logins_ssl=YES\nforce_anon_data_ssl=YES\n\
                 require_ssl_reuse=NO\nssl_ciphers=HIGH\nrsa_cert_file={}\nrsa_private_key_file={}\n",
                root.path().join("server.pem").display(),
                root.path().join("server.key").display()
            );
        }
        let conf = root.path().join("vsftpd.conf");
        std::fs::write(
            &conf,
            format!(
                "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\nseccomp_sandbox=NO\n\
                 anonymous_enable=YES\nno_anon_password=YES\nanon_root={}\nlocal_enable=NO\nwrite_enable=YES\n\
                 anon_upload_enable=YES\nanon_other_write_enable=YES\nanon_world_readable_only=NO\nanon_umask=022\n\
                 ftp_username=ftp\nsecure_chroot_dir={}\npasv_enable=YES\npasv_address=127.0.0.1\n\
                 pasv_min_port={pasv}\npasv_max_port={}\nxferlog_enable=NO\ncheck_shell=NO\n\
                 vsftpd_log_file={}\ndual_log_enable=NO\n",
                ftp_root.display(),
                empty.display(),
                pasv + 32,
                root.path().join("vsftpd.log").display()
            ) + &ssl
                + extra,
        )
        .unwrap();
        let bin = std::env::var("VSFTPD").unwrap_or_else(|_| "/usr/sbin/vsftpd".to_string());
        let mut child = Command::new(&bin)
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{bin}` ({e}); scripts/test installs Debian's vsftpd"));
        if listening(&mut child, port) {
            return Vsftpd { root, port, child };
        }
        let _ = child.kill();
        panic!("vsftpd did not listen on 127.0.0.1:{port}");
    }

    /// The folder files land in, on the server's disk.
    pub fn landing(&self) -> PathBuf {
        self.root.path().join("root/landing")
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca(&self) -> String {
        self.root.path().join("ca.pem").to_string_lossy().into_owned()
    }

    pub fn url(&self) -> String {
        format!("ftp://anonymous@127.0.0.1:{}/landing", self.port)
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
