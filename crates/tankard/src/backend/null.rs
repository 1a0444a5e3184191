//! The `null` store: keeps nothing, so every call runs its creator. A
//! region of this type has neither tier; its creators still share the
//! in-process single-flight unless `lock = none`.

use super::{Opener, Reach, Store};
use crate::options::BackendKind;

/// The `null` store in the registry ([`super::STORES`]): always built, no
/// options of its own.
pub(crate) const STORE: Store = Store {
    kind: BackendKind::Null,
    feature: None,
    reach: Reach::Process,
    check: |_| Ok(()),
    open: Some(Opener::Nothing),
};
