//! Walking an error's causes, including the errors an `io::Error` wraps.

use std::error::Error as StdError;

/// `err` and its causes, outermost first. `io::Error::source` skips the error an
/// `io::Error` wraps (hyper-rustls and lettre wrap TLS and protocol errors that way), so
/// wrapped errors are visited through `get_ref` instead.
pub(crate) fn chain<'e>(
    err: &'e (dyn StdError + 'static),
) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    fn next<'e>(e: &&'e (dyn StdError + 'static)) -> Option<&'e (dyn StdError + 'static)> {
        let e: &'e (dyn StdError + 'static) = *e;
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        }
    }
    std::iter::successors(Some(err), next)
}
