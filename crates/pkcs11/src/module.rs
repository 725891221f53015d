//! PKCS#11 modules loaded into this process, and logged-in sessions on a token.
//!
//! A module may be initialized once per process (`C_Initialize`), and a token's
//! login state is shared by all of a process's sessions on it: so each module is
//! loaded once and kept, and one operation at a time runs on it, from
//! initialization to logout. Each operation starts by finalizing and initializing
//! the module again and logging in: a module may keep its own copy of the token
//! per process (SoftHSM reads the token's PIN and objects at `C_Initialize`), and a
//! key check must prove access to the token as it is now — a changed PIN refused,
//! a token added since found — not to a copy or an old login.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use pgcmk_crypto::SecretBytes;

use crate::error::{classify, TokenError};

/// Whether an operation only uses objects or also creates or destroys them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Encrypt, decrypt, sign, read attributes.
    ReadOnly,
    /// Also generate and destroy token objects.
    ReadWrite,
}

/// One loaded and initialized module.
pub struct Module {
    path: PathBuf,
    context: Pkcs11,
    /// Held from login to logout: the login state is per process and token.
    busy: Mutex<()>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn loaded() -> &'static Mutex<HashMap<PathBuf, Arc<Module>>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

impl Module {
    /// The module at `path`, loaded and initialized on first use.
    pub fn get(path: &Path) -> Result<Arc<Module>, TokenError> {
        let mut modules = loaded().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(path) {
            return Ok(m.clone());
        }
        let what = format!("loading PKCS#11 module {}", path.display());
        if !path.is_file() {
            return Err(TokenError::Invalid {
                reason: format!(
                    "{what}: no such file: install the token's module or correct the module's \
                     path"
                ),
            });
        }
        let context = Pkcs11::new(path).map_err(|e| classify(&what, e))?;
        initialize(&context).map_err(|e| classify(&what, e))?;
        // Finalized again before each operation (`as_user`).
        let module = Arc::new(Module {
            path: path.to_path_buf(),
            context,
            busy: Mutex::new(()),
        });
        modules.insert(path.to_path_buf(), module.clone());
        Ok(module)
    }

    /// Runs `op` in a session (`access`) on the token labelled `token`, logged in
    /// as its user with `pin`, and logs out after.
    pub fn as_user<T, E: From<TokenError>>(
        &self,
        token: &str,
        pin: &SecretBytes,
        access: Access,
        op: impl FnOnce(&Session) -> Result<T, E>,
    ) -> Result<T, E> {
        let _busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        self.reinitialize()?;
        let slot = self.slot_of(token)?;
        let session = match access {
            Access::ReadOnly => self.context.open_ro_session(slot),
            Access::ReadWrite => self.context.open_rw_session(slot),
        }
        .map_err(|e| classify(&format!("opening a session on token '{token}'"), e))?;
        let raw = RawAuthPin::new(Box::new(pin.expose_secret().to_vec()));
        session.login_with_raw(UserType::User, &raw).map_err(|e| {
            classify(
                &format!("logging in to token '{token}' with its user PIN"),
                e,
            )
        })?;
        let result = op(&session);
        if let Err(e) = session.logout() {
            tracing::warn!("logging out of token '{token}': {e}");
        }
        result
    }

    /// Finalizes and initializes the module (no session is open: `busy` is held).
    fn reinitialize(&self) -> Result<(), TokenError> {
        let what = format!("initializing PKCS#11 module {}", self.path.display());
        match self.context.clone().finalize() {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {}
            Err(e) => return Err(classify(&what, e)),
        }
        initialize(&self.context).map_err(|e| classify(&what, e))
    }

    /// The slot holding the token labelled `token`.
    fn slot_of(&self, token: &str) -> Result<Slot, TokenError> {
        let what = format!("finding token '{token}' in module {}", self.path.display());
        let mut labels = Vec::new();
        for slot in self
            .context
            .get_slots_with_token()
            .map_err(|e| classify(&what, e))?
        {
            let info = self
                .context
                .get_token_info(slot)
                .map_err(|e| classify(&what, e))?;
            if info.label() == token {
                return Ok(slot);
            }
            labels.push(format!("'{}'", info.label()));
        }
        Err(TokenError::Denied {
            reason: format!(
                "{what}: no such token is present (tokens present: {}): connect the token \
                 or correct the token's label",
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(", ")
                }
            ),
        })
    }
}

/// `C_Initialize` for use from many threads; a module that another user in this
/// process initialized first is fine.
fn initialize(context: &Pkcs11) -> Result<(), CkError> {
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}
