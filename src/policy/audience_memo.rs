//! The rules that apply to the identity judged last on this thread.
//!
//! Why: [`RuleSet::audience`] walks every rule (the built-in set alone has
//! 22) on every judged message, where a session's identity and the rules
//! change only on a reload. Sessions judge one after the other on a thread,
//! mostly as the same few identities, so the last answer is usually right.
//!
//! Sound because the memo is keyed by the rule set itself and by the whole
//! identity: the rule set by its allocation, held through a `Weak`, so the
//! address cannot be reused by a newer rule set while the memo remembers it
//! (a reload builds a new `Arc<RuleSet>`; `RuleSet` is never changed in
//! place once shared); the identity by equality (user and groups, all that
//! [`super::rules::Rule::applies_to`] reads).

use super::rules::{Audience, Identity, RuleSet};
use std::cell::RefCell;
use std::sync::{Arc, Weak};

struct Memo {
    rules: Weak<RuleSet>,
    who: Identity,
    audience: Audience,
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// `rules.audience(who)`, remembered for the next call on this thread.
pub(super) fn audience(rules: &Arc<RuleSet>, who: &Identity) -> Audience {
    MEMO.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return rules.audience(who);
        };
        if let Some(m) = memo.as_ref() {
            if std::ptr::eq(m.rules.as_ptr(), Arc::as_ptr(rules)) && m.who == *who {
                return m.audience.clone();
            }
        }
        let audience = rules.audience(who);
        *memo = Some(Memo {
            rules: Arc::downgrade(rules),
            who: who.clone(),
            audience: audience.clone(),
        });
        audience
    })
}

#[cfg(test)]
mod tests {
    use super::audience;
    use crate::policy::rules::{Identity, RuleSet};
    use std::sync::Arc;

    fn rules(toml: &str) -> Arc<RuleSet> {
        let config = crate::config::Config::parse(
            &format!(
                "[upstreams.main]\nuser = \"app\"\n[users.alice]\nscram_verifier = \"{}\"\n[policy]\nbuiltin_rules = false\n{toml}",
                crate::auth::verifier::ScramVerifier::generate("pw")
            ),
            std::path::Path::new("/etc/pgward/pgward.toml"),
        )
        .expect("config");
        Arc::clone(&config.policy)
    }

    #[test]
    fn a_new_rule_set_or_identity_is_asked_afresh() {
        let for_ops = "[[policy.rules]]\nname = \"r\"\naction = \"deny\"\ngroups = [\"ops\"]\nkinds = [\"delete\"]\n";
        let for_dev = "[[policy.rules]]\nname = \"r\"\naction = \"deny\"\ngroups = [\"dev\"]\nkinds = [\"delete\"]\n";
        let ops = Identity::new("alice", ["ops"]);
        let dev = Identity::new("alice", ["dev"]);
        let (a, b) = (rules(for_ops), rules(for_dev));
        for _ in 0..2 {
            for (set, who) in [(&a, &ops), (&a, &dev), (&b, &ops), (&b, &dev), (&b, &dev)] {
                assert_eq!(audience(set, who), set.audience(who));
            }
        }
        // A rule set dropped and another made (perhaps at the same address)
        // is asked afresh too.
        let first = audience(&a, &ops);
        drop(a);
        let c = rules(for_dev);
        assert_eq!(audience(&c, &ops), c.audience(&ops));
        assert_ne!(first, c.audience(&ops));
    }
}
