//! The cipher directory's configuration file: format version, volume id and a key
//! check value, so a wrong key is refused before anything is mounted.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use pgcmk_crypto::{ct_eq, random, SymmetricKey};

use crate::content::{VolumeKey, VOLUME_ID_LEN};
use crate::format::{BLOCK_SIZE, FORMAT_VERSION, OLDEST_READ_VERSION};
use crate::Error;

/// Name of the configuration file at the root of a cipher directory. It is hidden
/// from the mounted view and cannot be created, renamed or removed through it.
pub const CONFIG_FILE_NAME: &str = "pgcmk-cryptfs.conf";
const FORMAT_NAME: &str = "pgcmk-cryptfs";
const CIPHER_NAME: &str = "AES-256-GCM-SIV";

/// The parsed configuration of a cipher directory. Its text is read before any key
/// check, so [`VolumeConfig::parse`] takes whatever bytes the directory holds.
pub struct VolumeConfig {
    volume_id: [u8; VOLUME_ID_LEN],
    key_check: [u8; 32],
}

impl VolumeConfig {
    fn render(&self) -> String {
        format!(
            "# pgcmk cryptfs configuration; do not edit (see docs/format.md)\n\
             format = {FORMAT_NAME}\nversion = {FORMAT_VERSION}\nblock_size = {BLOCK_SIZE}\n\
             cipher = {CIPHER_NAME}\nvolume_id = {}\nkey_check = {}\n",
            hex::encode(self.volume_id),
            hex::encode(self.key_check)
        )
    }

    /// Parses the configuration file's text; the error says which field is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut fields = std::collections::BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {line:?} is not `name = value`"))?;
            fields.insert(name.trim(), value.trim());
        }
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| format!("missing field `{name}`"))
        };
        if field("format")? != FORMAT_NAME {
            return Err(format!("format is not {FORMAT_NAME}"));
        }
        let version = field("version")?;
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).any(|v| version == v.to_string()) {
            return Err(format!(
                "format version {version} is not supported by this build (it reads versions {OLDEST_READ_VERSION} to {FORMAT_VERSION}); use a matching pgcmk"
            ));
        }
        if field("block_size")? != BLOCK_SIZE.to_string() || field("cipher")? != CIPHER_NAME {
            return Err(format!(
                "only block_size = {BLOCK_SIZE} and cipher = {CIPHER_NAME} are supported"
            ));
        }
        Ok(Self {
            volume_id: hex_field(field("volume_id")?, "volume_id")?,
            key_check: hex_field(field("key_check")?, "key_check")?,
        })
    }
}

fn hex_field<const N: usize>(value: &str, name: &str) -> Result<[u8; N], String> {
    let bytes = hex::decode(value).map_err(|_| format!("`{name}` is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("`{name}` must be {} hex characters", 2 * N))
}

/// Writes a new configuration into the empty directory `cipher_dir` (created if
/// missing), durably: temp file, fsync, rename, fsync of the directory.
pub fn init(cipher_dir: &Path, master_key: &SymmetricKey) -> Result<(), Error> {
    fs::create_dir_all(cipher_dir).map_err(Error::path("creating", cipher_dir))?;
    let mut entries = fs::read_dir(cipher_dir).map_err(Error::path("reading", cipher_dir))?;
    if entries.next().is_some() {
        return Err(Error::NotEmpty(cipher_dir.to_path_buf()));
    }
    let volume_id = random::array()?;
    let volume = VolumeKey::new(master_key.clone(), volume_id);
    let config = VolumeConfig {
        volume_id,
        key_check: volume.key_check_value()?,
    };
    let temp = cipher_dir.join(format!(".{CONFIG_FILE_NAME}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(Error::path("creating", &temp))?;
    file.write_all(config.render().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(Error::path("writing", &temp))?;
    let path = config_path(cipher_dir);
    fs::rename(&temp, &path).map_err(Error::path("renaming", &path))?;
    sync_dir(cipher_dir)
}

/// Reads the configuration of `cipher_dir` and checks `master_key` against it.
pub fn open(cipher_dir: &Path, master_key: &SymmetricKey) -> Result<VolumeKey, Error> {
    let path = config_path(cipher_dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotInitialized(cipher_dir.to_path_buf()))
        }
        Err(e) => return Err(Error::path("reading", &path)(e)),
    };
    let config = VolumeConfig::parse(&text).map_err(|reason| Error::BadConfig {
        path: path.clone(),
        reason,
    })?;
    let volume = VolumeKey::new(master_key.clone(), config.volume_id);
    if !ct_eq(&volume.key_check_value()?, &config.key_check) {
        return Err(Error::WrongKey);
    }
    Ok(volume)
}

fn config_path(cipher_dir: &Path) -> PathBuf {
    cipher_dir.join(CONFIG_FILE_NAME)
}

/// Makes a directory's entries (creations, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::path("syncing directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_open_wrong_key_and_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let key = SymmetricKey::from_bytes([4; 32]);
        init(dir.path(), &key).unwrap();
        open(dir.path(), &key).unwrap();
        assert!(matches!(
            open(dir.path(), &SymmetricKey::from_bytes([5; 32])),
            Err(Error::WrongKey)
        ));
        assert!(matches!(init(dir.path(), &key), Err(Error::NotEmpty(_))));
        let other = tempfile::tempdir().unwrap();
        assert!(matches!(
            open(other.path(), &key),
            Err(Error::NotInitialized(_))
        ));
    }

    #[test]
    fn damaged_config_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let key = SymmetricKey::from_bytes([4; 32]);
        init(dir.path(), &key).unwrap();
        let path = config_path(dir.path());
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("version = 4", "version = 3")).unwrap();
        open(dir.path(), &key).expect("a version 3 volume is still mounted");
        fs::write(&path, text.replace("version = 4", "version = 9")).unwrap();
        let err = open(dir.path(), &key).unwrap_err().to_string();
        assert!(err.contains("version 9 is not supported"), "{err}");
    }
}
