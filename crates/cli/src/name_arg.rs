//! The name of the resource a command acts on, given the same way by every command:
//! positional (`pgcmk server show orders`), or as `-n/--name` (`pgcmk server show -n
//! orders`), as the managed services' command lines accept it. One of the two, never both.

use clap::Args;

/// A required resource name.
#[derive(Args, Clone, Debug)]
#[group(id = "resource_name", required = true, multiple = false)]
pub struct NameArg {
    /// The resource's name.
    #[arg(value_name = "NAME")]
    positional: Option<String>,
    /// The resource's name (the same as the positional NAME).
    #[arg(id = "name_flag", short = 'n', long = "name", value_name = "NAME")]
    flag: Option<String>,
}

impl NameArg {
    /// The name given, whichever way.
    pub fn as_str(&self) -> &str {
        self.positional
            .as_deref()
            .or(self.flag.as_deref())
            .expect("clap requires one of NAME and --name")
    }

    /// The name given, whichever way.
    pub fn into_name(self) -> String {
        self.as_str().to_string()
    }
}

impl serde::Serialize for NameArg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for NameArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource name that may be left out (`pgcmk key list --vault V [NAME]`).
#[derive(Args, Clone, Debug)]
#[group(id = "optional_resource_name", required = false, multiple = false)]
pub struct OptionalNameArg {
    /// The resource's name.
    #[arg(value_name = "NAME")]
    positional: Option<String>,
    /// The resource's name (the same as the positional NAME).
    #[arg(
        id = "optional_name_flag",
        short = 'n',
        long = "name",
        value_name = "NAME"
    )]
    flag: Option<String>,
}

impl OptionalNameArg {
    /// The name given, if any.
    pub fn into_name(self) -> Option<String> {
        self.positional.or(self.flag)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        name: NameArg,
    }

    fn parse(args: &[&str]) -> Result<String, clap::Error> {
        Cmd::try_parse_from(std::iter::once("cmd").chain(args.iter().copied()))
            .map(|c| c.name.into_name())
    }

    #[test]
    fn positional_and_flag_are_the_same_argument() {
        assert_eq!(parse(&["orders"]).unwrap(), "orders");
        assert_eq!(parse(&["--name", "orders"]).unwrap(), "orders");
        assert_eq!(parse(&["-n", "orders"]).unwrap(), "orders");
    }

    #[test]
    fn a_name_is_required_once() {
        let missing = parse(&[]).unwrap_err();
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let both = parse(&["orders", "--name", "other"]).unwrap_err();
        assert_eq!(both.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
