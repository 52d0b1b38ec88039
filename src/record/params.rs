//! Bind parameters as the audit trail writes them: redacted (NULL or not),
//! in full, or as an HMAC-SHA256 under a key (equal values compare equal,
//! values cannot be read back without guessing them with the key).
//!
//! In `full` mode a parameter is never written in clear where it may bind
//! to a masked column: when the identity sees any column masked, or the
//! statement names a column some mask rule covers (a word-level check that
//! errs towards hiding). Those are hashed when a key is set, else redacted.

use crate::config::audit::ParameterMode;
use crate::mask::rules::MaskConfig;
use crate::policy::rules::Identity;
use crate::wire::frontend::BindView;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a redacted non-NULL parameter reads as.
pub(crate) const REDACTED: &str = "<redacted>";
/// Longest clear parameter written; longer ones are cut (the length noted).
const MAX_CLEAR: usize = 4096;

/// How one audit writes parameters.
#[derive(Clone)]
pub(crate) struct ParamPolicy {
    pub(crate) mode: ParameterMode,
    pub(crate) key: Option<Vec<u8>>,
}

impl ParamPolicy {
    /// The parameters of `bind`; `sensitive`: they may bind to a masked
    /// column (see [`may_touch_masked`]).
    pub(crate) fn render(&self, bind: &BindView<'_>, sensitive: bool) -> Vec<Option<String>> {
        let hash = match (&self.mode, &self.key) {
            (ParameterMode::Hash, Some(_)) => true,
            (ParameterMode::Full, Some(_)) => sensitive,
            _ => false,
        };
        let clear = self.mode == ParameterMode::Full && !sensitive;
        bind.params()
            .enumerate()
            .map(|(i, value)| {
                let value = value?;
                Some(if clear {
                    clear_text(value, bind.param_format(i))
                } else if hash {
                    self.hmac(value)
                } else {
                    REDACTED.to_owned()
                })
            })
            .collect()
    }

    fn hmac(&self, value: &[u8]) -> String {
        let key = self.key.as_deref().unwrap_or_default();
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256>>::new_from_slice(key).expect("any key length");
        mac.update(value);
        format!(
            "hmac-sha256:{}",
            super::chain::hex(&mac.finalize().into_bytes())
        )
    }
}

/// A text parameter as text, a binary one as `\x` hex; cut at `MAX_CLEAR`.
fn clear_text(value: &[u8], format: i16) -> String {
    let cut = &value[..value.len().min(MAX_CLEAR)];
    let mut s = if format == 0 {
        String::from_utf8_lossy(cut).into_owned()
    } else {
        format!("\\x{}", super::chain::hex(cut))
    };
    if cut.len() < value.len() {
        s.push_str(&format!("...({} bytes)", value.len()));
    }
    s
}

/// Whether parameters of `text`, bound by `who`, may reach a masked column.
pub(crate) fn may_touch_masked(text: &[u8], who: &Identity, masking: &MaskConfig) -> bool {
    if masking.rules.iter().any(|r| r.applies_to(who)) {
        return true;
    }
    let text = String::from_utf8_lossy(text).to_lowercase();
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .collect();
    masking.rules.iter().any(|rule| {
        rule.columns
            .iter()
            .any(|p| words.iter().any(|w| p.column.matches(w)))
    })
}
