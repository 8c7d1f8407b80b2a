//! Hydration: `GET /v1/view/{name}` → `{name, address, version, size,
//! content_type, links:{raw}, feed:[…], warnings:[…]}`.
//!
//! The index is asked first (its failure is a 502: without the record
//! there is nothing to show); then the storage HEAD and the mailbox feed
//! run in parallel, each under its downstream's limiter and the hydration
//! time budget. An optional part that fails, is busy or runs out of time
//! becomes a warning in a 200.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use ron_kernel::http::{json, Routed};
use ron_kernel::metrics::names;
use ron_kernel::Problem;
use serde::{Deserialize, Serialize};

use crate::{Gate, Service};

pub const ROUTE: &str = "/v1/view/{name}";

/// The part of an index record a view needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub address: String,
    pub version: u64,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub feed: Option<String>,
}

#[derive(Debug, Serialize)]
struct Links {
    raw: String,
}

#[derive(Debug, Serialize)]
struct View {
    name: String,
    address: String,
    version: u64,
    size: Option<u64>,
    content_type: Option<String>,
    links: Links,
    feed: Vec<serde_json::Value>,
    warnings: Vec<String>,
}

/// Why an optional part is missing.
pub enum PartError {
    NotFound,
    Busy,
    Failed(String),
}

pub async fn view(gate: Arc<Gate>, name: String) -> Routed {
    let start = Instant::now();
    let cfg = gate.cfg.load();
    let budget = cfg.permit_budget;
    let record = {
        let Some(_permit) = gate
            .limiter(Service::Index)
            .acquire_within(cfg.index_semaphore as usize, budget)
            .await
        else {
            return Routed::new(ROUTE, gate.reject_downstream_busy(Service::Index));
        };
        match gate.index_get(&name).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Routed::new(
                    ROUTE,
                    Problem::not_found(format!("no name {name:?}")).into_response(),
                )
            }
            Err(detail) => {
                return Routed::new(
                    ROUTE,
                    Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "index_failed",
                        format!("the index could not be read: {detail}"),
                    )
                    .into_response(),
                )
            }
        }
    };

    let part_budget = cfg.hydration_budget;
    let size = async {
        let permit = gate
            .limiter(Service::Storage)
            .acquire_within(cfg.storage_semaphore as usize, part_budget)
            .await
            .ok_or(PartError::Busy)?;
        let r = tokio::time::timeout(part_budget, gate.storage_size(&record.address))
            .await
            .map_err(|_| PartError::Failed(format!("timed out after {part_budget:?}")))?;
        drop(permit);
        r
    };
    let feed = async {
        let Some(topic) = record.feed.as_deref() else {
            return Ok(Vec::new());
        };
        let permit = gate
            .limiter(Service::Mailbox)
            .acquire_within(cfg.mailbox_semaphore as usize, part_budget)
            .await
            .ok_or(PartError::Busy)?;
        let r = tokio::time::timeout(
            part_budget,
            gate.mailbox_latest(topic, cfg.view_feed_len as usize),
        )
        .await
        .map_err(|_| PartError::Failed(format!("timed out after {part_budget:?}")))?;
        drop(permit);
        r
    };
    let (size, feed) = tokio::join!(size, feed);
    let mut warnings = Vec::new();
    let size = match size {
        Ok(s) => Some(s),
        Err(e) => {
            warnings.push(warning("storage", e));
            None
        }
    };
    let feed = match feed {
        Ok(f) => f,
        Err(e) => {
            warnings.push(warning("mailbox", e));
            Vec::new()
        }
    };
    let view = View {
        links: Links {
            raw: format!("/v1/o/{}", record.address),
        },
        name,
        address: record.address,
        version: record.version,
        size,
        content_type: record.content_type,
        feed,
        warnings,
    };
    metrics::histogram!(names::OMNIGATE_HYDRATION_LATENCY_SECONDS)
        .record(start.elapsed().as_secs_f64());
    Routed::new(ROUTE, json(StatusCode::OK, &view))
}

fn warning(part: &str, e: PartError) -> String {
    match e {
        PartError::NotFound => format!("{part}: not found"),
        PartError::Busy => format!("{part}: busy (no permit within the hydration budget)"),
        PartError::Failed(why) => format!("{part}: {why}"),
    }
}
