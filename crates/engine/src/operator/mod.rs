//! The operator: applying inputs and re-evaluating the workflow, split by concern.
//!
//! - [`inputs`]: results, resumes and stops change node state.
//! - [`walk`]: the root-to-leaf re-evaluation and leaf/suspend nodes.
//! - [`steps`], [`dag`], [`retry`]: the template kinds that group other nodes.
//! - [`bookkeeping`]: node creation and phase changes.

mod bookkeeping;
mod dag;
mod inputs;
mod retry;
mod steps;
mod walk;

pub(crate) use dag::DagRuntime;
pub(crate) use steps::GroupPlan;
