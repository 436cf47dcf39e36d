//! The field-state machine: statuses, holds, dependencies and waiting.

use crate::domain::status::DocStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Progressing,
    Blocked,
    Waiting,
    PendingReview,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Progressing => "progressing",
            Status::Blocked => "blocked",
            Status::Waiting => "waiting",
            Status::PendingReview => "pending_review",
            Status::Completed => "completed",
        }
    }
    /// Held for a person: the review queue's statuses.
    pub fn awaits_review(self) -> bool {
        matches!(self, Status::Blocked | Status::PendingReview)
    }
    pub fn is_held(self) -> bool {
        matches!(
            self,
            Status::Blocked | Status::Waiting | Status::PendingReview
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Phase index of the gate that raised it.
    #[serde(default)]
    pub phase: usize,
    pub stage_id: String,
    pub severity: String,
    pub reason: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One field of one pipeline document. A field absent from the stored map is progressing at
/// phase 0, which is how a new document starts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FieldState {
    #[serde(default)]
    pub status: Status,
    /// Next phase index, for a progressing field.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next: usize,
    /// Phase index of the gate that blocked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_at: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<String>,
    /// `gate` or `declarative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// `review_queue`, `hold` or `declarative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pinned: bool,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub pin: Value,
    /// A reviewer's corrections of single elements of an array field, `(path, value)` in the
    /// order they were made (`lines[3].amount`, `lines[3]`): each stands over what any phase
    /// computes for that element, while the rest of the array is computed as usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub element_pins: Vec<(String, Value)>,
    /// Gate phase indices under a loop guard (approve or override).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// Human versions stored up to this cell sequence were ended by a reopen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_after: Option<i64>,
    /// `(cell sequence, phase index)` of each time the field resumed in a later pass: its
    /// non-human versions stored up to that sequence at that phase or later stopped being live
    /// (DESIGN.md §3, passes). Kept across reruns, since they decide earlier generations' cells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumed: Vec<(i64, usize)>,
    /// A reopened field being computed again: the gate where it goes back to review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_at: Option<usize>,
}

impl FieldState {
    pub fn in_play_at(&self, phase: usize) -> bool {
        self.status == Status::Progressing && self.next <= phase
    }

    pub fn block(
        &mut self,
        gate_phase: usize,
        stage_id: &str,
        routing: &str,
        reason: Option<&str>,
        now: &str,
    ) {
        self.status = Status::Blocked;
        self.blocked_at = Some(gate_phase);
        self.stage_id = Some(stage_id.to_string());
        self.blocked_by = None;
        self.trigger = Some("gate".into());
        self.routing = Some(routing.to_string());
        self.reason = reason.map(str::to_string);
        self.requested_at = Some(now.to_string());
    }

    /// Puts the field back in play at `phase` in a later pass. What earlier passes wrote at that
    /// phase or later (cells stored up to `cut`) no longer counts, and neither do the warning
    /// flags of gates it will pass again: they judged a value that is being recomputed.
    pub fn resume(&mut self, phase: usize, cut: i64) {
        self.status = Status::Progressing;
        self.next = phase;
        self.blocked_by = None;
        self.completed_at = None;
        self.flags.retain(|f| f.phase < phase);
        // A later cut at an earlier or equal phase covers an earlier cut entirely.
        self.resumed.retain(|(c, p)| !(*c <= cut && *p >= phase));
        self.resumed.push((cut, phase));
    }

    /// Whether a non-human version of this field, stored at `seq` (0: not stored yet) by
    /// `phase`, was superseded by a later pass that resumed the field at or before that phase.
    pub fn superseded(&self, seq: i64, phase: usize) -> bool {
        seq != 0
            && self
                .resumed
                .iter()
                .any(|(cut, from)| seq <= *cut && phase >= *from)
    }

    /// Back in review after a reopen, at the gate of its last decision (or declaratively).
    pub fn await_review(&mut self, gate: Option<(usize, String)>, now: &str) {
        self.status = Status::PendingReview;
        self.review_at = None;
        self.blocked_by = None;
        self.reason = Some("reopened".into());
        self.requested_at = Some(now.to_string());
        match gate {
            Some((phase, stage_id)) => {
                self.trigger = Some("gate".into());
                self.routing = Some("review_queue".into());
                self.blocked_at = Some(phase);
                self.stage_id = Some(stage_id);
            }
            None => {
                self.trigger = Some("declarative".into());
                self.routing = Some("declarative".into());
                self.blocked_at = None;
            }
        }
    }

    pub fn wait_on(&mut self, upstream: &str) {
        self.status = Status::Waiting;
        self.blocked_by = Some(upstream.to_string());
    }

    /// Completes the field. `now` is recorded for completions outside a document's run (a
    /// resolve); fields completed by the run itself share the document's `completed_at`, which
    /// keeps every document row small.
    pub fn complete(&mut self, now: Option<&str>) {
        self.status = Status::Completed;
        self.blocked_by = None;
        self.completed_at = now.map(str::to_string);
    }
}

pub type States = BTreeMap<String, FieldState>;

/// The stored map with absent fields filled in as progressing at phase 0.
pub fn with_fields(mut map: States, fields: &[String]) -> States {
    for f in fields {
        map.entry(f.clone()).or_default();
    }
    map
}

/// Field states of `(field, status, next phase)`, for tests of what decides from states.
#[cfg(test)]
pub fn states_at(list: &[(&str, Status, usize)]) -> States {
    list.iter()
        .map(|(f, status, next)| {
            let st = FieldState {
                status: *status,
                next: *next,
                ..FieldState::default()
            };
            (f.to_string(), st)
        })
        .collect()
}

/// Which fields each field reads directly: its `depends_on`, plus the inputs of the rules that
/// compute it (dropped for a pinned field).
#[derive(Debug, Clone, Default)]
pub struct Deps {
    pub declared: BTreeMap<String, BTreeSet<String>>,
    pub computed: BTreeMap<String, BTreeSet<String>>,
}

impl Deps {
    fn direct<'a>(&'a self, f: &str, states: &States) -> impl Iterator<Item = &'a String> {
        let pinned = states.get(f).is_some_and(|s| s.pinned);
        let declared = self.declared.get(f).into_iter().flatten();
        let computed = (!pinned)
            .then(|| self.computed.get(f))
            .flatten()
            .into_iter()
            .flatten();
        declared.chain(computed)
    }

    /// Every field `f` depends on, directly or through others.
    pub fn closure(&self, f: &str, states: &States) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![f.to_string()];
        while let Some(x) = stack.pop() {
            for d in self.direct(&x, states) {
                if d != f && out.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        out
    }
}

/// After blocks: every field that depends on a blocked or pending-review field waits, naming
/// the first such field in schema order. Blocked and pending-review fields keep their status.
/// Returns the fields that started waiting.
pub fn apply_waiting(states: &mut States, order: &[String], deps: &Deps) -> Vec<String> {
    let roots: Vec<String> = order
        .iter()
        .filter(|f| states.get(*f).is_some_and(|s| s.status.awaits_review()))
        .cloned()
        .collect();
    let mut started = Vec::new();
    if roots.is_empty() {
        return started;
    }
    for f in order {
        let Some(st) = states.get(f) else { continue };
        if st.status.awaits_review() {
            continue;
        }
        let closure = deps.closure(f, states);
        if let Some(root) = roots.iter().find(|r| closure.contains(*r)) {
            let st = states.get_mut(f).expect("present");
            if st.status != Status::Waiting {
                started.push(f.clone());
            }
            st.wait_on(root);
        }
    }
    started
}

/// The fields that are waiting but no longer have a held root upstream.
pub fn released_waiters(states: &States, order: &[String], deps: &Deps) -> Vec<String> {
    order
        .iter()
        .filter(|f| states.get(*f).is_some_and(|s| s.status == Status::Waiting))
        .filter(|f| {
            !deps
                .closure(f, states)
                .iter()
                .any(|d| states.get(d).is_some_and(|s| s.status.awaits_review()))
        })
        .cloned()
        .collect()
}

/// The document's status from its fields: `complete`, `partial`, or `None` while work is left.
pub fn document_status(states: &States) -> Option<DocStatus> {
    if states.values().any(|s| s.status == Status::Progressing) {
        return None;
    }
    if states.values().all(|s| s.status == Status::Completed) {
        Some(DocStatus::Complete)
    } else {
        Some(DocStatus::Partial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (States, Vec<String>, Deps) {
        let order: Vec<String> = ["net", "tax", "total", "grand", "note"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let states = with_fields(States::new(), &order);
        let mut deps = Deps::default();
        deps.computed
            .insert("total".into(), BTreeSet::from(["net".into(), "tax".into()]));
        deps.declared
            .insert("grand".into(), BTreeSet::from(["total".into()]));
        (states, order, deps)
    }

    #[test]
    fn a_blocked_field_holds_its_transitive_dependents() {
        let (mut s, order, deps) = setup();
        s.get_mut("net")
            .unwrap()
            .block(3, "g", "review_queue", None, "t");
        let started = apply_waiting(&mut s, &order, &deps);
        assert_eq!(started, vec!["total", "grand"]);
        assert_eq!(s["total"].blocked_by.as_deref(), Some("net"));
        assert_eq!(
            s["grand"].blocked_by.as_deref(),
            Some("net"),
            "the root, not the waiting middle"
        );
        assert_eq!(s["note"].status, Status::Progressing);
        assert_eq!(document_status(&s), None);
    }

    #[test]
    fn blocked_wins_over_waiting() {
        let (mut s, order, deps) = setup();
        s.get_mut("net")
            .unwrap()
            .block(3, "g", "review_queue", None, "t");
        s.get_mut("total")
            .unwrap()
            .block(3, "g", "review_queue", None, "t");
        apply_waiting(&mut s, &order, &deps);
        assert_eq!(s["total"].status, Status::Blocked);
        assert_eq!(s["grand"].blocked_by.as_deref(), Some("net"));
    }

    #[test]
    fn two_held_upstream_fields_release_only_when_both_are_released() {
        let (mut s, order, deps) = setup();
        s.get_mut("net")
            .unwrap()
            .block(3, "g", "review_queue", None, "t");
        s.get_mut("tax")
            .unwrap()
            .block(3, "g", "review_queue", None, "t");
        apply_waiting(&mut s, &order, &deps);
        assert_eq!(s["total"].status, Status::Waiting);
        s.get_mut("net").unwrap().complete(None);
        assert!(released_waiters(&s, &order, &deps).is_empty());
        apply_waiting(&mut s, &order, &deps);
        assert_eq!(s["total"].blocked_by.as_deref(), Some("tax"));
        s.get_mut("tax").unwrap().complete(None);
        assert_eq!(released_waiters(&s, &order, &deps), vec!["total", "grand"]);
    }

    #[test]
    fn a_pinned_field_depends_only_through_depends_on() {
        let (mut s, order, deps) = setup();
        s.get_mut("total").unwrap().pinned = true;
        s.get_mut("net")
            .unwrap()
            .block(3, "g", "review_queue", None, "t");
        apply_waiting(&mut s, &order, &deps);
        assert_eq!(s["total"].status, Status::Progressing);
        assert_eq!(s["grand"].status, Status::Progressing);
    }

    #[test]
    fn a_resume_supersedes_stored_versions_from_its_phase_and_the_flags_it_will_judge_again() {
        let mut st = FieldState::default();
        for phase in [1, 3] {
            st.flags.push(Flag {
                phase,
                stage_id: "g".into(),
                severity: "warning".into(),
                reason: "failed_check".into(),
            });
        }
        st.block(3, "g", "review_queue", None, "t");
        st.resume(2, 40);
        assert_eq!((st.status, st.next), (Status::Progressing, 2));
        assert!(st.superseded(40, 2) && st.superseded(12, 5));
        assert!(!st.superseded(40, 1), "earlier phases stand");
        assert!(!st.superseded(41, 2), "later versions are this pass's own");
        assert!(!st.superseded(0, 2), "a version not stored yet is new");
        assert_eq!(
            st.flags.len(),
            1,
            "the flag of the gate before the resume stays"
        );
        // A later resume at an earlier phase covers the earlier one; at a later phase it adds.
        st.resume(1, 50);
        assert_eq!(st.resumed, vec![(50, 1)]);
        st.resume(3, 60);
        assert_eq!(st.resumed, vec![(50, 1), (60, 3)]);
        assert!(st.superseded(45, 1) && !st.superseded(55, 2) && st.superseded(55, 3));
    }

    #[test]
    fn statuses_serialize_compactly_and_documents_end_complete_or_partial() {
        let (mut s, _, _) = setup();
        assert_eq!(
            serde_json::to_string(&s["net"]).unwrap(),
            r#"{"status":"progressing"}"#
        );
        for st in s.values_mut() {
            st.complete(None);
        }
        assert_eq!(document_status(&s), Some(DocStatus::Complete));
        s.get_mut("note").unwrap().status = Status::PendingReview;
        assert_eq!(document_status(&s), Some(DocStatus::Partial));
    }
}
