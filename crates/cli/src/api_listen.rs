//! Where `pgcmk serve`'s REST API listens, and the names its certificate holds
//! (`docs/hosts.md`, "The plane's address"). Loopback needs nothing more; any other
//! address is reached by clients and hosts on other machines, which verify the
//! certificate by the name they use: it must name that address (`--api-name`), and
//! a wildcard listen (`0.0.0.0`, `::`) needs at least one name.

use std::net::SocketAddr;

use crate::error::CliError;

/// The longest name accepted (a DNS name's limit).
const MAX_NAME: usize = 253;

/// The names the certificate adds to the loopback ones, checked against `listen`.
pub fn checked_api_names(listen: SocketAddr, names: &[String]) -> Result<Vec<String>, CliError> {
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !valid {
            return Err(CliError::usage(format!(
                "--api-name '{name}' is not a DNS name or an IP address: give the name or \
                 address clients and hosts reach the control plane by"
            )));
        }
    }
    let ip = listen.ip();
    if ip.is_unspecified() && names.is_empty() {
        return Err(CliError::usage(format!(
            "--listen {listen} listens on every address: give --api-name with the name or \
             address clients and hosts use, which the REST API's certificate must name"
        )));
    }
    if !ip.is_loopback() && !ip.is_unspecified() && !names.iter().any(|n| *n == ip.to_string()) {
        return Err(CliError::usage(format!(
            "--listen {listen}: the REST API's certificate names localhost, 127.0.0.1 and ::1 \
             only; add --api-name {ip} (and any DNS name clients use)"
        )));
    }
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(listen: &str, names: &[&str]) -> Result<Vec<String>, String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        checked_api_names(listen.parse().unwrap(), &names).map_err(|e| e.to_string())
    }

    #[test]
    fn loopback_needs_no_name() {
        assert_eq!(check("127.0.0.1:7480", &[]), Ok(vec![]));
    }

    #[test]
    fn another_address_must_be_named() {
        let refused = check("10.0.0.7:7480", &["plane.example"]).unwrap_err();
        assert!(refused.contains("--api-name 10.0.0.7"), "{refused}");
        assert_eq!(
            check("10.0.0.7:7480", &["plane.example", "10.0.0.7"]),
            Ok(vec!["10.0.0.7".to_string(), "plane.example".to_string()])
        );
    }

    #[test]
    fn a_wildcard_listen_needs_a_name_and_names_are_checked() {
        assert!(check("0.0.0.0:7480", &[])
            .unwrap_err()
            .contains("--api-name"));
        assert!(check("0.0.0.0:7480", &["plane.example"]).is_ok());
        assert!(check("[::]:7480", &["bad name"])
            .unwrap_err()
            .contains("not a DNS name"));
    }
}
