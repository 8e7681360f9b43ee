//! Background jobs (`async=true` imports) and their progress, as DHIS2's
//! `/api/system/tasks` and `/api/system/taskSummaries` report them.
//!
//! Kept in the memory of the instance that runs the job: with several
//! instances behind a balancer, poll the one that answered the request.

use std::collections::HashMap;
use std::sync::Mutex;

use hisa_shared::Uid;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::metadata::import::format_timestamp;

#[derive(Debug, Clone)]
struct Job {
    job_type: String,
    notifications: Vec<Value>,
    summary: Option<Value>,
}

#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Job>>,
    /// Woken whenever a job finishes.
    finished: tokio::sync::Notify,
}

impl Jobs {
    /// Register a job; its id.
    pub fn start(&self, job_type: &str) -> String {
        let id = Uid::generate().to_string();
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.insert(
            id.clone(),
            Job {
                job_type: job_type.to_string(),
                notifications: vec![],
                summary: None,
            },
        );
        drop(jobs);
        self.notify(&id, "Import started", false);
        id
    }

    pub fn notify(&self, id: &str, message: &str, completed: bool) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.get_mut(id) {
            // Newest first, as DHIS2 lists them.
            job.notifications.insert(
                0,
                json!({
                    "uid": Uid::generate().to_string(),
                    "level": "INFO",
                    "category": job.job_type,
                    "time": format_timestamp(OffsetDateTime::now_utc()),
                    "message": message,
                    "completed": completed,
                    "id": id,
                }),
            );
        }
    }

    pub fn finish(&self, id: &str, summary: Value, message: &str) {
        self.notify(id, message, true);
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = jobs.get_mut(id) {
            job.summary = Some(summary);
        }
        drop(jobs);
        self.finished.notify_waiters();
    }

    /// The summary of job `id` once it has finished; `None` for an unknown job.
    pub async fn wait(&self, id: &str) -> Option<Value> {
        loop {
            // Registered before looking, so a finish in between still wakes us.
            let woken = self.finished.notified();
            match self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
                None => return None,
                Some(Job {
                    summary: Some(s), ..
                }) => return Some(s.clone()),
                Some(_) => {}
            }
            woken.await;
        }
    }

    pub fn notifications(&self, job_type: &str, id: &str) -> Option<Value> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(id)
            .filter(|j| j.job_type.eq_ignore_ascii_case(job_type))
            .map(|j| Value::Array(j.notifications.clone()))
    }

    pub fn summary(&self, job_type: &str, id: &str) -> Option<Option<Value>> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.get(id)
            .filter(|j| j.job_type.eq_ignore_ascii_case(job_type))
            .map(|j| j.summary.clone())
    }
}
