//! The providers' Batch APIs for embeddings ([`BatchApi`]): create a job for a list of texts,
//! ask how it stands, read its results, cancel it. Gemini's is [`GeminiBatch`] (`gemini.rs`),
//! OpenAI's is [`OpenAiBatch`] (`openai.rs`), each with the wire shapes of the provider's
//! official SDK.
//!
//! Every error passes through the key's redaction, as the interactive providers' do.

use super::openai::OPENAI_TASK;
use super::{EmbedError, Space, check_answer, normalize};

mod gemini;
mod openai;

pub use gemini::{GeminiBatch, INLINE_LIMIT_BYTES};
pub use openai::OpenAiBatch;

/// How long one transfer of a job's data (an upload, a create with inline requests, a
/// finished job's results) may take: they run to hundreds of MB, well past the per-request
/// timeout of the interactive API.
const TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Expired,
    Cancelled,
    /// The API does not know the job (any more).
    Unknown,
}

impl JobState {
    /// A state the job leaves no more.
    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    pub fn name(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
            JobState::Unknown => "unknown to the API",
        }
    }
}

/// One text's result in a finished job.
pub type ItemResult = Result<Vec<f32>, String>;

/// A provider's Batch API for one embedding space.
#[async_trait::async_trait]
pub trait BatchApi: Send + Sync {
    /// Creates a job embedding `texts`; returns its name.
    async fn create(&self, texts: &[String], display_name: &str) -> Result<String, EmbedError>;
    /// The name of the job created with `display_name`, if the API knows one (a run killed
    /// between creating a job and writing its name down finds it so).
    async fn find(&self, display_name: &str) -> Result<Option<String>, EmbedError>;
    /// Where job `name` stands.
    async fn state(&self, name: &str) -> Result<JobState, EmbedError>;
    /// The results of the finished job `name` of `count` texts, in their order.
    async fn results(&self, name: &str, count: usize) -> Result<Vec<ItemResult>, EmbedError>;
    /// What job `name` of `count` texts kept after it ended expired or cancelled: the result
    /// of each text it got to (`None` for the others). OpenAI keeps them; by default (Gemini)
    /// nothing is kept.
    async fn kept(&self, name: &str, count: usize) -> Result<Vec<Option<ItemResult>>, EmbedError> {
        let _ = name;
        Ok(vec![None; count])
    }
    /// Asks the API to cancel job `name`.
    async fn cancel(&self, name: &str) -> Result<(), EmbedError>;
}

/// A vector a finished job answered, checked and normalised as the interactive provider of
/// the space does (Gemini's 3072 dimensions come normalised; every other size is normalised
/// here).
fn finished_vector(mut values: Vec<f32>, space: &Space) -> ItemResult {
    check_answer(std::slice::from_ref(&values), 1, space.dimension).map_err(|e| e.to_string())?;
    if space.dimension < 3072 || space.task_type == OPENAI_TASK {
        normalize(&mut values);
    }
    Ok(values)
}
