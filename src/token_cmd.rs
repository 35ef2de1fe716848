//! `govex token new`: a new bearer token and the configuration entry that holds its hash.

use anyhow::{bail, Result};

/// The text `govex token new` prints: the token (shown once, stored nowhere) and the
/// `[[intake.tokens]]` entry holding its SHA-256.
pub fn new_token(department: &str, label: Option<&str>, role: &str) -> Result<String> {
    let Ok(department) = govex_schemas::Department::parse(department) else {
        bail!("'{department}' is not a department: a department is a name such as tax or market-regulation (lower-case letters, digits and single hyphens)")
    };
    if !["department", "steward", "auditor", "operator"].contains(&role) {
        bail!("'{role}' is not a role: expected department, steward, auditor or operator");
    }
    let token = govex_http::auth::new_token();
    let hash = govex_http::auth::hash_token(&token);
    let mut text = format!("token (give it to the {department} system; it is not stored anywhere):\n  {token}\n\n");
    // In the node's config the table is [[intake.tokens]]; in a file named by
    // intake.tokens_file (a Kubernetes Secret) it is [[tokens]].
    text.push_str(&format!(
        "config entry (only the hash is kept; in an intake.tokens_file write [[tokens]] instead):\n[[intake.tokens]]\ndepartment = \"{department}\"\nsha256 = \"{hash}\"\n"
    ));
    if let Some(label) = label {
        text.push_str(&format!("label = \"{label}\"\n"));
    }
    if role != "department" {
        text.push_str(&format!("role = \"{role}\"\n"));
    }
    Ok(text)
}
