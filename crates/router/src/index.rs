//! Candidate selection: which matchers may match a request, in evaluation order.

use crate::compile::Entry;
use crate::request::Prepared;

/// The index over matchers (first version: every matcher is a candidate).
pub(crate) struct Index {
    all: Vec<u32>,
}

impl Index {
    pub fn build(entries: &[Entry]) -> Self {
        Index {
            all: (0..entries.len() as u32).collect(),
        }
    }

    pub fn candidates<'i>(&'i self, _req: &Prepared<'_>) -> Candidates<'i> {
        Candidates { rest: &self.all }
    }
}

/// Candidate ranks in ascending order.
pub(crate) struct Candidates<'i> {
    rest: &'i [u32],
}

impl Candidates<'_> {
    pub fn next_rank(&mut self) -> Option<u32> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(*first)
    }
}
