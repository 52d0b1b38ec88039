//! Who is asking, and may they: approvers log in with their pgward
//! credentials (HTTP basic checked against their SCRAM verifier, or a
//! bearer token minted by pgward), and the browser's automatic credentials
//! are never enough to change anything (cross-site request forgery).

use crate::admin::{basic_credentials, password_identity, AdminState};
use crate::auth::identity::Identity;
use crate::gateway::Gateway;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeSet;

/// The header every state-changing request must carry. A cross-site page
/// cannot set it without a CORS preflight, which pgward never grants.
pub const CSRF_HEADER: &str = "x-pgward-request";

/// An authenticated caller of the approvals API.
#[derive(Debug, Clone)]
pub struct Approver {
    /// The identity.
    pub identity: Identity,
    /// Whether it is in one of `[admin] groups`.
    pub admin: bool,
}

impl Approver {
    /// Whether it is in any of `groups`.
    pub fn in_any(&self, groups: &[String]) -> bool {
        self.identity.groups.iter().any(|g| groups.contains(g))
    }
}

/// Every group that approves something: the rules' approver groups, the
/// `[approvals]` default ones, and the admin groups (who see everything but
/// vote only where they are approvers too).
pub fn approver_groups(gw: &Gateway) -> BTreeSet<String> {
    let rules = gw.rules.load();
    let set = &rules.policy.rules;
    let mut groups: BTreeSet<String> = gw.approvals().config().approvers.iter().cloned().collect();
    for settings in set
        .rules
        .iter()
        .filter_map(|r| r.approval.as_deref())
        .chain(set.default_approval.as_deref())
    {
        groups.extend(settings.approvers.iter().cloned());
    }
    if let Some(admin) = &gw.config.admin {
        groups.extend(admin.groups.iter().cloned());
    }
    groups
}

/// The identity behind `Authorization` (basic or bearer), if it proves one.
pub(crate) async fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Option<Identity> {
    if let Some((user, password)) = basic_credentials(headers) {
        return password_identity(gw, &user, password).await;
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    // The token names its user; verification then holds it to that name
    // exactly as a PostgreSQL login would (issuer, audience, expiry,
    // revocation).
    let unverified = crate::auth::token::jwt::split(token).ok()?;
    let user = unverified.claims.get("sub")?.as_str()?.to_owned();
    let tokens = gw.tokens.load_full();
    if !tokens.is_token_user(&user) {
        return None;
    }
    match tokens.verify(token, &user).await {
        Ok(t) => Some(Identity::new(t.user, t.groups)),
        Err(e) => {
            tracing::warn!(user, error = %e, "approvals API: token refused");
            None
        }
    }
}

/// Whether what a browser says of a request's origin (`Origin`,
/// `Sec-Fetch-Site`) is another site. Non-browser clients send neither.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin") | Ok("none")) {
            return true;
        }
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
                return true;
            };
            origin
                .split_once("://")
                .is_none_or(|(_, authority)| authority != host)
        }
        (Some(_), None) => true,
    }
}

/// Whether a request that changes state came from pgward's own page or a
/// non-browser client: it carries [`CSRF_HEADER`] (which a cross-site page
/// cannot set without a CORS preflight, never granted) and is not
/// [`cross_site`].
pub fn same_origin(headers: &HeaderMap) -> bool {
    headers.contains_key(CSRF_HEADER) && !cross_site(headers)
}

/// Authenticates every approvals request and lets in approvers and admins
/// only; state-changing requests must also pass [`same_origin`].
pub async fn require_approver(
    State(state): State<AdminState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(identity) = authenticate(&state.gw, req.headers()).await else {
        tracing::warn!(path = %req.uri().path(), "approvals API: authentication failed");
        return crate::admin::unauthorized();
    };
    let groups = approver_groups(&state.gw);
    if !identity.groups.iter().any(|g| groups.contains(g)) {
        return super::api::error(
            StatusCode::FORBIDDEN,
            format!("{} is in no approver or admin group", identity.user),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD && !same_origin(req.headers()) {
        return super::api::error(
            StatusCode::FORBIDDEN,
            format!("a cross-site request, or one without the {CSRF_HEADER} header"),
        );
    }
    let admin = state
        .gw
        .config
        .admin
        .as_ref()
        .is_some_and(|a| identity.groups.iter().any(|g| a.groups.contains(g)));
    req.extensions_mut().insert(Approver { identity, admin });
    next.run(req).await.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn only_same_origin_requests_with_the_header_change_state() {
        assert!(same_origin(&headers(&[(CSRF_HEADER, "1")])));
        assert!(same_origin(&headers(&[
            (CSRF_HEADER, "1"),
            ("host", "127.0.0.1:9187"),
            ("origin", "http://127.0.0.1:9187"),
            ("sec-fetch-site", "same-origin"),
        ])));
        for refused in [
            headers(&[]),
            headers(&[("host", "h"), ("origin", "http://h")]),
            headers(&[(CSRF_HEADER, "1"), ("host", "h"), ("origin", "http://evil")]),
            headers(&[(CSRF_HEADER, "1"), ("origin", "http://h")]),
            headers(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "cross-site")]),
            headers(&[(CSRF_HEADER, "1"), ("sec-fetch-site", "same-site")]),
        ] {
            assert!(!same_origin(&refused), "{refused:?}");
        }
    }
}
