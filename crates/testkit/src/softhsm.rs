//! A SoftHSM2 token store of the test's own (Debian `softhsm2`), with tokens, key
//! pairs and PINs that a test sets up and changes as a customer's HSM
//! administrator would, through the same PKCS#11 module the product loads.
//!
//! SoftHSM finds its store through `SOFTHSM2_CONF`, read when the module is
//! initialized: [`SoftHsm::start`] points it at the test's configuration for this
//! process and the processes it starts (the control plane, and its agents). The
//! module keeps that store until it is finalized, which [`Drop`] does, so the next
//! store a test binary starts is read afresh. The token labels must all be known at
//! start: a SoftHSM process sees the tokens that existed when it initialized.

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The security officer PIN of every test token.
const SO_PIN: &str = "test-so-pin";

/// DER of the P-256 curve's OID, for a key of the wrong type.
const P256: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A token store in a temporary directory, its module loaded in this process.
pub struct SoftHsm {
    context: Pkcs11,
    dir: tempfile::TempDir,
    /// Held from login to logout: this process's sessions share one login state.
    busy: std::sync::Mutex<()>,
    /// The last field: let go after [`Drop`] has finalized the module.
    _turn: Turn,
}

/// Whether a [`SoftHsm`] of this process is in use.
static IN_USE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
/// Signalled when a [`Turn`] ends.
static TURN_ENDED: std::sync::Condvar = std::sync::Condvar::new();

/// This process's one store at a time: a test that starts a store while a shared
/// fixture's store is still being dropped waits for it instead of initializing the
/// module a second time (`CKR_CRYPTOKI_ALREADY_INITIALIZED`). Ends when dropped,
/// also when a start fails half-way.
struct Turn;

impl Turn {
    fn take() -> Self {
        let in_use = IN_USE.lock().unwrap_or_else(PoisonError::into_inner);
        let mut in_use = TURN_ENDED
            .wait_while(in_use, |in_use| *in_use)
            .unwrap_or_else(PoisonError::into_inner);
        *in_use = true;
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *IN_USE.lock().unwrap_or_else(PoisonError::into_inner) = false;
        TURN_ENDED.notify_all();
    }
}

impl SoftHsm {
    /// A new store with one initialized token per label in `tokens`, each with the
    /// user PIN `user_pin`.
    pub fn start(tokens: &[&str], user_pin: &str) -> Self {
        assert!(
            Path::new(MODULE).is_file(),
            "{MODULE} is missing: scripts/setup installs softhsm2"
        );
        let turn = Turn::take();
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("tokens");
        std::fs::create_dir(&store).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
                 slots.removable = false\n",
                store.display()
            ),
        )
        .unwrap();
        // Read by the module at C_Initialize, here and in the processes started
        // from now on.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let context = Pkcs11::new(MODULE).unwrap();
        context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
        let hsm = Self {
            context,
            dir,
            busy: std::sync::Mutex::default(),
            _turn: turn,
        };
        for label in tokens {
            hsm.init_token(label, user_pin);
        }
        hsm
    }

    /// The store's directory (its `tokens/` hold every object, encrypted).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file of mode 0600 in the store's directory holding `pin`, for
    /// `--identity-credential-file`.
    pub fn pin_file(&self, name: &str, pin: &str) -> PathBuf {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, pin.as_bytes()).unwrap();
        path
    }

    fn init_token(&self, label: &str, user_pin: &str) {
        let initialized = self.context.get_slots_with_initialized_token().unwrap();
        let slot = self
            .context
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| !initialized.contains(s))
            .expect("SoftHSM offers a free slot");
        self.context
            .init_token(slot, &AuthPin::from(SO_PIN), label)
            .unwrap();
        let session = self.context.open_rw_session(self.slot(label)).unwrap();
        session
            .login(UserType::So, Some(&AuthPin::from(SO_PIN)))
            .unwrap();
        session.init_pin(&AuthPin::from(user_pin)).unwrap();
    }

    fn slot(&self, token: &str) -> Slot {
        let slots = self.context.get_slots_with_initialized_token().unwrap();
        slots
            .into_iter()
            .find(|s| self.context.get_token_info(*s).unwrap().label() == token)
            .unwrap_or_else(|| panic!("no token '{token}'"))
    }

    /// Runs `op` logged in to `token` as its user.
    fn as_user<T>(&self, token: &str, pin: &str, op: impl FnOnce(&Session) -> T) -> T {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        let session = self.context.open_rw_session(self.slot(token)).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(pin)))
            .unwrap();
        let out = op(&session);
        session.logout().unwrap();
        out
    }

    /// Generates an RSA key pair of `bits` in `token`, labelled `label` with
    /// `CKA_ID` `id`: private, sensitive, never extractable, for encryption only.
    pub fn generate_rsa(&self, token: &str, pin: &str, label: &str, id: &[u8], bits: u64) {
        self.as_user(token, pin, |s| {
            s.generate_key_pair(
                &Mechanism::RsaPkcsKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Label(label.into()),
                    Attribute::Id(id.to_vec()),
                    Attribute::ModulusBits(bits.into()),
                    Attribute::PublicExponent(vec![1, 0, 1]),
                    Attribute::Encrypt(true),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Label(label.into()),
                    Attribute::Id(id.to_vec()),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap()
        });
    }

    /// Generates an EC P-256 key pair (a type that cannot wrap a DEK here).
    pub fn generate_ec(&self, token: &str, pin: &str, label: &str, id: &[u8]) {
        self.as_user(token, pin, |s| {
            s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Label(label.into()),
                    Attribute::Id(id.to_vec()),
                    Attribute::EcParams(P256.to_vec()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Label(label.into()),
                    Attribute::Id(id.to_vec()),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Sign(true),
                ],
            )
            .unwrap()
        });
    }

    fn objects(s: &Session, label: &str, class: ObjectClass) -> Vec<ObjectHandle> {
        s.find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
            .unwrap()
    }

    /// Allows or forbids decryption with the private key `label` (`CKA_DECRYPT`).
    pub fn set_decrypt(&self, token: &str, pin: &str, label: &str, allowed: bool) {
        self.as_user(token, pin, |s| {
            for key in Self::objects(s, label, ObjectClass::PRIVATE_KEY) {
                s.update_attributes(key, &[Attribute::Decrypt(allowed)])
                    .unwrap();
            }
        });
    }

    /// Deletes both halves of the key pair `label`.
    pub fn delete(&self, token: &str, pin: &str, label: &str) {
        self.as_user(token, pin, |s| {
            for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                for key in Self::objects(s, label, class) {
                    s.destroy_object(key).unwrap();
                }
            }
        });
    }

    /// Changes `token`'s user PIN from `old` to `new`.
    pub fn change_pin(&self, token: &str, old: &str, new: &str) {
        self.as_user(token, old, |s| {
            s.set_pin(&AuthPin::from(old), &AuthPin::from(new)).unwrap()
        });
    }

    /// Reads the token store afresh (finalize, initialize), to see objects that
    /// another process (a vault) created or destroyed since this one initialized.
    pub fn reload(&self) {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        self.context.clone().finalize().unwrap();
        self.context
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .unwrap();
    }

    /// How many objects (either half of a key pair) carry `label` in `token`.
    pub fn count_labelled(&self, token: &str, pin: &str, label: &str) -> usize {
        self.as_user(token, pin, |s| {
            s.find_objects(&[Attribute::Label(label.into())])
                .unwrap()
                .len()
        })
    }

    /// True when the private key `label` may not be extracted from `token`.
    pub fn never_extractable(&self, token: &str, pin: &str, label: &str) -> bool {
        self.as_user(token, pin, |s| {
            let key = Self::objects(s, label, ObjectClass::PRIVATE_KEY)[0];
            let a = s
                .get_attributes(key, &[AttributeType::Extractable, AttributeType::Sensitive])
                .unwrap();
            a.contains(&Attribute::Extractable(false)) && a.contains(&Attribute::Sensitive(true))
        })
    }
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        // The next store this binary starts is read afresh by C_Initialize.
        let _ = self.context.clone().finalize();
    }
}
