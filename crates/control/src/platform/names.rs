//! What a server's name and location may be.

use crate::Error;

pub(super) fn validate_name(name: &str) -> Result<(), Error> {
    validate_name_of("server", name)
}

/// Hosts are named by the servers' rules.
pub(super) fn validate_host_name(name: &str) -> Result<(), Error> {
    validate_name_of("host", name)
}

/// A host daemon's instance: what `pgcmk host serve` draws (hex) or a name.
pub(super) fn validate_instance(instance: &str) -> Result<(), Error> {
    if name_like(instance, 1..=128) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "the daemon's instance name '{instance}' is not valid: use 1-128 lowercase \
             letters, digits and '-' (`pgcmk host serve` draws one at every start)"
        )))
    }
}

fn name_like(name: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn validate_name_of(what: &str, name: &str) -> Result<(), Error> {
    if name_like(name, 3..=63) {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "{what} name '{name}' is not valid: use 3-63 lowercase letters, digits and '-', \
             not starting or ending with '-'"
        )))
    }
}

pub(super) fn validate_location(location: &str) -> Result<(), Error> {
    let ok = (1..=64).contains(&location.len())
        && location
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "location '{location}' is not valid: use letters, digits and '-' (e.g. westeurope)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_locations_are_checked_with_reasons() {
        for ok in ["abc", "my-server-1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["ab", "-abc", "abc-", "Abc", "a_b_c", &"a".repeat(64)] {
            let err = validate_name(bad).unwrap_err().to_string();
            assert!(err.contains("3-63 lowercase"), "{bad}: {err}");
        }
        validate_instance("0a1b").unwrap();
        assert!(validate_instance("").is_err() && validate_instance(&"a".repeat(129)).is_err());
        let err = validate_host_name("Host").unwrap_err().to_string();
        assert!(err.starts_with("host name 'Host'"), "{err}");
        validate_location("westeurope").unwrap();
        assert!(validate_location("west europe").is_err());
        assert!(validate_location("").is_err());
    }
}
