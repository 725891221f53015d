//! A PyKMIP server (PyPI `pykmip`, in the workspace's `.venv`) on a free loopback
//! port, with TLS certificates made by the test: a CA, the server's certificate,
//! the platform's client certificate (and its key: the credential a server is
//! created with), and a stranger's from another CA. The customer's key
//! administrator is PyKMIP's own client, run with the platform's certificate (PyKMIP
//! lets a key's owner use it; the owner is the certificate that created it).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair,
};

use crate::process::{
    children_of, is_gone, kill9, kill_quietly, spawn_logged, terminate, wait_exit,
};
use crate::wait::wait_for;

/// The key administrator's operations, as PyKMIP's client does them.
const OFFICER: &str = r#"
import sys
from kmip import enums
from kmip.pie.client import ProxyKmipClient
port, cert, key, ca, op = sys.argv[1:6]
args = sys.argv[6:]
c = ProxyKmipClient(hostname="127.0.0.1", port=int(port), cert=cert, key=key, ca=ca,
                    config_file="/dev/null")
with c:
    if op == "create":
        # Through the protocol layer: the convenience create adds Encrypt and
        # Decrypt to any usage mask.
        from kmip.core import objects
        from kmip.core.factories.attributes import AttributeFactory
        bits, usage, activate = int(args[0]), args[1].split(","), args[2] == "yes"
        masks = [getattr(enums.CryptographicUsageMask, u.upper()) for u in usage]
        a = AttributeFactory()
        template = objects.TemplateAttribute(attributes=[
            a.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_ALGORITHM,
                               enums.CryptographicAlgorithm.AES),
            a.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_LENGTH, bits),
            a.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK, masks),
        ])
        result = c.proxy.create(enums.ObjectType.SYMMETRIC_KEY, template)
        assert result.result_status.value == enums.ResultStatus.SUCCESS, result.result_message
        uid = result.uuid
        if activate:
            c.activate(uid)
        print(uid)
    elif op == "revoke":
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, args[0])
    elif op == "destroy":
        c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, args[0])
        c.destroy(args[0])
"#;

/// A running PyKMIP server; stopped (by its handle) when dropped.
pub struct KmipServer {
    child: Child,
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA that issued the server's and the platform's certificates.
    pub ca_file: PathBuf,
    /// The platform's client certificate and key, PEM, mode 0600.
    pub credential: PathBuf,
    /// A client certificate and key from another CA, PEM, mode 0600.
    pub stranger: PathBuf,
}

/// The workspace's virtualenv, where `scripts/setup` installs PyKMIP.
pub(crate) fn venv_bin(program: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin");
    let path = bin.join(program);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup (it installs PyKMIP from tests/python/requirements.txt)",
        path.display()
    );
    path
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

pub(crate) fn ca(cn: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = name(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A certificate for `names` signed by `issuer`, and its key, PEM.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    purpose: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = name(cn);
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub(crate) fn write_private(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

impl KmipServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (ca_pem, issuer) = ca("pgcmk test KMIP CA");
        let (server_cert, server_key) = leaf(
            &issuer,
            "127.0.0.1",
            &["127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &issuer,
            "platform",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let (_, other) = ca("another CA");
        let (stranger_cert, stranger_key) =
            leaf(&other, "platform", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let ca_file = d.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).unwrap();
        std::fs::write(d.join("server.pem"), server_cert).unwrap();
        write_private(&d.join("server.key"), &server_key);
        std::fs::write(d.join("client.pem"), &client_cert).unwrap();
        write_private(&d.join("client.key"), &client_key);
        let credential = d.join("platform.credential");
        write_private(&credential, &format!("{client_cert}{client_key}"));
        let stranger = d.join("stranger.credential");
        write_private(&stranger, &format!("{stranger_cert}{stranger_key}"));
        std::fs::create_dir(d.join("policies")).unwrap();
        let port = crate::net::free_port();
        let conf = d.join("server.conf");
        std::fs::write(
            &conf,
            format!(
                "[server]\nhostname=127.0.0.1\nport={port}\ncertificate_path={0}/server.pem\n\
                 key_path={0}/server.key\nca_path={0}/ca.pem\nauth_suite=TLS1.2\n\
                 policy_path={0}/policies\nenable_tls_client_auth=True\nlogging_level=INFO\n\
                 database_path={0}/pykmip.db\n",
                d.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(venv_bin("pykmip-server"));
        command
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(d.join("server.log"));
        let child = spawn_logged(&mut command, &d.join("out.log"));
        let mut server = Self {
            child,
            dir,
            port,
            ca_file,
            credential,
            stranger,
        };
        let out = server.dir.path().join("out.log");
        let child = &mut server.child;
        wait_for("PyKMIP to listen", Duration::from_secs(60), || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "PyKMIP exited: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        server
    }

    /// The server's pid (for its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The reference to the key `uid` on this server.
    pub fn reference(&self, uid: &str) -> String {
        format!(
            "kmip://127.0.0.1:{}/{uid}?ca-file={}",
            self.port,
            self.ca_file.display()
        )
    }

    fn officer(&self, op: &str, args: &[&str]) -> String {
        let d = self.dir.path();
        let out = Command::new(venv_bin("python"))
            .args(["-c", OFFICER, &self.port.to_string()])
            .arg(d.join("client.pem"))
            .arg(d.join("client.key"))
            .arg(&self.ca_file)
            .arg(op)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PyKMIP client {op} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Creates an AES key of `bits` for `usage` (e.g. `encrypt,decrypt`), Active
    /// when `activate`; its unique identifier.
    pub fn create_key(&self, bits: u32, usage: &str, activate: bool) -> String {
        let activate = if activate { "yes" } else { "no" };
        self.officer("create", &[&bits.to_string(), usage, activate])
    }

    /// Revokes the key (it becomes Deactivated: KMIP has no way back).
    pub fn revoke(&self, uid: &str) {
        self.officer("revoke", &[uid]);
    }

    /// Revokes and destroys the key.
    pub fn destroy(&self, uid: &str) {
        self.officer("destroy", &[uid]);
    }
}

impl Drop for KmipServer {
    /// PyKMIP runs its policy-directory monitor as a child process, which outlives
    /// a killed parent: the server is asked to stop (SIGTERM stops the monitor
    /// too), and whatever of the two is left after a while is killed, by pid.
    fn drop(&mut self) {
        let pid = self.child.id();
        let children = children_of(pid);
        terminate(pid);
        wait_exit(&mut self.child, Duration::from_secs(10));
        kill_quietly(&mut self.child);
        for child in children {
            if !is_gone(child) {
                kill9(child);
            }
        }
    }
}
