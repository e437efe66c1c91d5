//! File descriptors: every simulated phone holds a socket, so thousands of concurrent or
//! held sessions need more than the usual soft limit of 1024.

#[derive(Debug, thiserror::Error)]
pub enum FdError {
    #[error("cannot raise the open file limit: {0}")]
    Raise(std::io::Error),
    #[error(
        "{needed} open files are needed (concurrency + held sessions + a margin), but the \
         limit is {limit}: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower \
         --concurrency/--hold"
    )]
    TooFew { needed: u64, limit: u64 },
}

/// Raises the soft RLIMIT_NOFILE to the hard limit and checks that `needed` fit.
/// Returns the limit now in force.
pub(super) fn ensure(needed: u64) -> Result<u64, FdError> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(FdError::Raise)?;
    if limit < needed {
        return Err(FdError::TooFew { needed, limit });
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_needs_fit_and_impossible_ones_are_refused() {
        assert!(ensure(16).unwrap() >= 16);
        assert!(matches!(ensure(u64::MAX), Err(FdError::TooFew { .. })));
    }
}
