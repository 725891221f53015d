//! What the running kernel offers: the `enable_uring` module parameter and the number of
//! possible CPUs (= ring queues the kernel expects).

use std::fs;

/// Root may write Y or N here; it only *offers* io_uring to mounts that ask for it in INIT.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// The parameter's value; `None` if the kernel has no FUSE io_uring support.
pub fn enable_uring() -> Option<bool> {
    let value = fs::read_to_string(ENABLE_URING).ok()?;
    Some(value.trim() == "Y")
}

/// Sets the parameter (root only).
pub fn set_enable_uring(on: bool) -> std::io::Result<()> {
    fs::write(ENABLE_URING, if on { "Y" } else { "N" })
}

/// CPUs that may ever come online (`num_possible_cpus()`): the kernel makes one ring queue
/// per possible CPU and the ring is ready only when each has registered.
pub fn possible_cpus() -> usize {
    fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or(1)
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6,8-9`.
fn parse_cpu_list(list: &str) -> Option<usize> {
    list.split(',').try_fold(0, |count, part| {
        let n = match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
        Some(count + n)
    })
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
