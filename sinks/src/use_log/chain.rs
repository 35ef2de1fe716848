//! The chain itself, apart from where it is kept: an entry and its hash, the one walk that
//! checks a chain (on disk or a replicated copy), the anchors of its head, and the comparison
//! of a chain with its copy and its anchor that `govex audit verify` prints.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The link the first entry holds: there is no entry before it.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One use of personal data (a licence, a holder's licences, a dossier), in the
/// append-only, hash-chained use log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hash of the entry before (64 zeros for the first).
    pub prev_hash: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// The calling department.
    pub caller: String,
    /// The stated purpose (用证事由).
    pub purpose: String,
    /// What was done: `get`, `verify`, `holder`, `uses`, `dossier`.
    pub action: String,
    /// The licence or property unit concerned (the masked holder for a holder look-up that
    /// found nothing).
    pub subject: String,
    /// The outcome (`found`, `not_found`, `valid`, `revoked`, ...).
    pub result: String,
    /// SHA-256 over every field above, with `prev_hash`.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            self.seq.to_string().as_str(),
            &self.prev_hash,
            &self.at_ms.to_string(),
            &self.caller,
            &self.purpose,
            &self.action,
            &self.subject,
            &self.result,
        ] {
            // Length-prefixed, so that no two different entries hash the same bytes.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A chain check that found a broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The first entry whose hash or link does not hold.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// The head of a use log at one moment, as [`ANCHOR_TOPIC`] holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The use log.
    pub writer: String,
    /// The head's sequence number.
    pub seq: i64,
    /// The head's hash.
    pub hash: String,
    /// When the head entry was written.
    pub at_ms: i64,
    /// When the anchor was published.
    pub anchored_at_ms: i64,
}

/// Walks a chain from its first entry, given as (position, entry) in order, an entry that
/// does not parse as `None`: how many entries hold, and the first whose position, link or
/// hash does not. Stops at the first error `entries` gives.
pub fn walk<E>(
    entries: impl IntoIterator<Item = Result<(u64, Option<AuditEntry>), E>>,
) -> Result<(u64, Option<BrokenLink>), E> {
    let mut previous = GENESIS.to_owned();
    let mut expected = 1;
    for item in entries {
        let (seq, entry) = item?;
        let broken = |reason: String| Ok((expected - 1, Some(BrokenLink { seq, reason })));
        let Some(entry) = entry else { return broken("the entry does not parse".into()) };
        if seq != expected || entry.seq != seq {
            return broken(format!("expected entry {expected}, found {seq} (an entry was removed or inserted)"));
        }
        if entry.prev_hash != previous {
            return broken("its link to the entry before does not match".into());
        }
        if entry.compute_hash() != entry.hash {
            return broken("its content does not match its hash (the entry was altered)".into());
        }
        previous = entry.hash;
        expected += 1;
    }
    Ok((expected - 1, None))
}

/// What is wrong with a chain given as entries (a replicated copy): its first broken link,
/// if any.
pub fn findings(entries: &[AuditEntry]) -> Vec<String> {
    let walked = walk(entries.iter().map(|e| Ok::<_, std::convert::Infallible>((e.seq, Some(e.clone())))));
    match walked {
        Ok((_, Some(broken))) => vec![format!("BROKEN at replicated entry {}: {}", broken.seq, broken.reason)],
        _ => Vec::new(),
    }
}

/// What comparing a chain on disk with its replicated copy and its anchor found; empty when
/// they agree. Each finding names the entry and what happened to it.
pub fn compare(local: &[AuditEntry], replicated: &[AuditEntry], anchor: Option<&Anchor>) -> Vec<String> {
    let mut findings = Vec::new();
    let local_head = local.last().map_or(0, |e| e.seq);
    let by_seq: std::collections::HashMap<u64, &AuditEntry> = local.iter().map(|e| (e.seq, e)).collect();
    if let Some(rewritten) = replicated.iter().find(|r| by_seq.get(&r.seq).is_some_and(|l| l.hash != r.hash)) {
        findings.push(format!(
            "REWRITTEN: entry {} on disk differs from its replicated copy (and so may every entry after it)",
            rewritten.seq
        ));
    }
    let replicated_head = replicated.last().map_or(0, |e| e.seq);
    if replicated_head > local_head {
        findings.push(format!(
            "TRUNCATED or ROLLED BACK: the disk ends at entry {local_head}; the replicated log holds entries up to {replicated_head} ({} missing)",
            replicated_head - local_head
        ));
    }
    if let Some(anchor) = anchor {
        let anchored = anchor.seq as u64;
        match by_seq.get(&anchored) {
            None if anchored > local_head => findings.push(format!(
                "ROLLED BACK: the anchor published at {} ms names entry {anchored}; the disk ends at entry {local_head}",
                anchor.anchored_at_ms
            )),
            Some(entry) if entry.hash != anchor.hash => {
                findings.push(format!("REWRITTEN: entry {anchored} on disk does not carry the anchored hash"))
            }
            _ => {}
        }
    }
    findings
}
