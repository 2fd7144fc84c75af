//! The HTTP+JSON API (see [`herd_proto::api`] for the routes), behind bearer-token auth.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use herd_proto::api::{
    CheckpointRequest, ContainerInfo, DrainReport, Event, Health, LabelRequest, MigrateRequest, MigrateUpdate,
    NodeInfo, NodeState, RestoreRequest, RunRequest, UpdateRequest,
};
use herd_proto::state::{CheckpointInfo, ImageRecord};
use serde::Deserialize;

use crate::control::Control;
use crate::error::{Error, Result};

/// The largest JSON request body accepted (413 beyond).
const MAX_JSON_BODY: usize = 16 << 20;

pub fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/control/status", get(control_status))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{name}", axum::routing::delete(remove_node))
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/nodes/{name}/labels", post(label_node))
        .route("/v1/nodes/{name}/drain", post(drain_node))
        .route("/v1/nodes/{name}/activate", post(activate_node))
        .route("/v1/images", get(images).post(import_image))
        .route("/v1/images/{*name}", axum::routing::delete(remove_image))
        .route("/v1/layers", get(layers))
        .route("/v1/pulls", post(pull_image))
        .route("/v1/containers", get(containers).post(run))
        .route("/v1/containers/{name}", get(inspect).delete(remove))
        .route("/v1/containers/{name}/stop", post(stop))
        .route("/v1/containers/{name}/start", post(start))
        .route("/v1/containers/{name}/restart", post(restart))
        .route("/v1/containers/{name}/logs", get(logs))
        .route("/v1/containers/{name}/checkpoint", post(checkpoint))
        .route("/v1/containers/{name}/update", post(update))
        .route("/v1/containers/{name}/checkpoints/{id}/archive", get(export_checkpoint))
        .route("/v1/containers/{name}/restore", post(restore))
        .route("/v1/containers/{name}/restore/archive", post(restore_archive))
        .route("/v1/containers/{name}/migrate", post(migrate))
        .route("/v1/containers/{name}/exec", get(exec))
        .route("/v1/migrations", get(migrations))
        .route("/v1/migrations/{id}", get(migration))
        .route("/v1/events", get(events))
        .route("/v1/stats", get(stats))
        .route("/v1/containers/{name}/series", get(series))
        .route("/v1/stats/nodes", get(node_stats))
        .route("/v1/nodes/{name}/series", get(node_series))
        .route("/v1/policy", get(policy).put(set_policy).delete(reset_policy))
        .route("/v1/policy/decisions", get(policy_decisions))
        .route("/metrics", get(metrics))
        .fallback(|| async { Error::not_found("no such API route") })
        // JSON bodies: no request needs more (what is stored must fit the broker's messages);
        // the streamed uploads (image archives, checkpoints) read their body as a stream, which
        // this does not limit, and are bounded by their own checks.
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(middleware::from_fn_with_state(control.clone(), authenticate))
        // Added after the auth layer, so only the dashboard's page shell (no data) is served
        // without a token; its scripts send the token with every API call.
        .merge(crate::dashboard::router())
        // A joining machine has no API token: its join token is its credential.
        .merge(join_routes())
        .with_state(control)
}

/// The routes a joining machine uses, without the API token (also served alone on
/// `JoinConfig::listen`).
fn join_routes() -> Router<Arc<Control>> {
    Router::new()
        .route("/v1/join/ca", get(join_ca))
        .route("/v1/join", post(join))
        .route("/v1/join/renew", post(renew_node_cert))
}

/// The join routes alone, for a listener of their own.
pub fn join_router(control: Arc<Control>) -> Router {
    join_routes()
        .fallback(|| async { Error::not_found("this port serves only /v1/join and /v1/join/ca") })
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(control)
}

async fn join_ca(State(c): State<Arc<Control>>) -> Result<String> {
    c.join_ca()
}

async fn join(State(c): State<Arc<Control>>, req: Request) -> Result<Json<herd_proto::join::JoinReply>> {
    use axum::extract::FromRequest;
    let peer = req.extensions().get::<axum::extract::ConnectInfo<crate::https::Peer>>().map(|c| c.0.addr);
    let Json(body) = Json::<herd_proto::join::JoinRequest>::from_request(req, &())
        .await
        .map_err(|e| Error::bad_request(format!("a join request: {}", e.body_text())))?;
    // Its own task: a client that goes away does not leave a token used and no member made.
    let joined = tokio::spawn(async move { c.join(body, peer).await });
    Ok(Json(joined.await.map_err(|e| Error::new(crate::error::Kind::Internal, format!("the join failed: {e}")))??))
}

/// A joined node's certificate, renewed: the request comes over TLS with the current one.
async fn renew_node_cert(State(c): State<Arc<Control>>, req: Request) -> Result<Json<herd_proto::join::JoinReply>> {
    use axum::extract::FromRequest;
    let peer = req.extensions().get::<axum::extract::ConnectInfo<crate::https::Peer>>().map(|c| c.0.clone());
    let Json(body) = Json::<herd_proto::join::RenewRequest>::from_request(req, &())
        .await
        .map_err(|e| Error::bad_request(format!("a renewal request: {}", e.body_text())))?;
    Ok(Json(c.renew_node_cert(peer, &body.csr).await?))
}

async fn create_join_token(
    State(c): State<Arc<Control>>,
    Json(req): Json<herd_proto::join::JoinTokenRequest>,
) -> Result<Json<herd_proto::join::JoinToken>> {
    Ok(Json(c.create_join_token(std::time::Duration::from_secs(req.ttl_secs)).await?))
}

async fn remove_node(State(c): State<Arc<Control>>, Path(name): Path<String>) -> Result<StatusCode> {
    c.remove_node(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Compares in constant time, so the token cannot be guessed byte by byte from timings.
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Whether `headers` carry the API token.
pub(crate) fn authorized(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    token_matches(given.as_bytes(), token.as_bytes())
}

/// The answer to a request without the right token.
pub(crate) fn unauthorized() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(herd_proto::api::ApiError {
            error: "missing or wrong API token: use the token herd up wrote to your Herd config".into(),
        }),
    )
        .into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
    resp
}

async fn authenticate(State(control): State<Arc<Control>>, req: Request, next: Next) -> Response {
    if authorized(req.headers(), &control.cfg.api_token) { next.run(req).await } else { unauthorized() }
}

/// `herd control status` of a Control node that runs alone (replicas answer it themselves,
/// see [`crate::replica`]).
async fn control_status(State(c): State<Arc<Control>>) -> Json<herd_proto::control::ControlStatus> {
    Json(herd_proto::control::ControlStatus {
        answered_by: "control".into(),
        lease: None,
        replicas: Vec::new(),
        broker_server: c.broker.client.server_info().server_name,
        state_peers: crate::replica::state_peers(&c.broker).await,
    })
}

async fn health(State(c): State<Arc<Control>>) -> Json<Health> {
    let nodes_ready = c.view.read().unwrap().nodes.values().filter(|n| n.state == NodeState::Ready).count();
    Json(Health { version: env!("CARGO_PKG_VERSION").to_string(), nodes_ready })
}

async fn nodes(State(c): State<Arc<Control>>) -> Json<Vec<NodeInfo>> {
    let view = c.view.read().unwrap();
    let allocations = view.allocations();
    let mut out: Vec<NodeInfo> = view.nodes.values().map(|n| view.node_info(&allocations, n)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Json(out)
}

async fn label_node(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Json(req): Json<LabelRequest>,
) -> Result<Json<NodeInfo>> {
    Ok(Json(c.label_node(&name, &req.changes).await?))
}

/// The drain runs in its own task, so a client that goes away does not cut a migration short.
async fn drain_node(State(c): State<Arc<Control>>, Path(name): Path<String>) -> Result<Json<DrainReport>> {
    let drain = tokio::spawn(async move { c.drain_node(&name).await });
    let report = drain.await.map_err(|e| Error::new(crate::error::Kind::Internal, format!("the drain failed: {e}")))?;
    Ok(Json(report?))
}

async fn activate_node(State(c): State<Arc<Control>>, Path(name): Path<String>) -> Result<Json<NodeInfo>> {
    Ok(Json(c.activate_node(&name).await?))
}

async fn images(State(c): State<Arc<Control>>) -> Json<Vec<ImageRecord>> {
    Json(c.list_images())
}

#[derive(Deserialize)]
struct ImportQuery {
    name: String,
    /// The CLI packed a directory into the upload.
    #[serde(default)]
    directory: bool,
}

async fn import_image(
    State(c): State<Arc<Control>>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Result<Json<ImageRecord>> {
    Ok(Json(c.import_image(&q.name, q.directory, body.into_data_stream()).await?))
}

async fn layers(State(c): State<Arc<Control>>) -> Result<Json<Vec<herd_proto::api::LayerInfo>>> {
    Ok(Json(c.list_layers().await?))
}

async fn remove_image(State(c): State<Arc<Control>>, Path(name): Path<String>) -> Result<StatusCode> {
    c.remove_image(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Streams the pull's updates as newline-delimited JSON ([`herd_proto::pull::PullUpdate`]),
/// like a migration's; the pull goes on if the client disconnects. A pull that fails before
/// the image is resolved (bad reference, unreachable registry, unknown tag, no image for this
/// platform) is an ordinary error answer.
async fn pull_image(State(c): State<Arc<Control>>, Json(req): Json<herd_proto::pull::PullRequest>) -> Result<Response> {
    use herd_proto::pull::PullUpdate;
    let pull = move |updates| async move { c.pull_image(req, updates).await };
    stream_updates("pull", pull, |r| PullUpdate::Report(Box::new(r)), PullUpdate::Error).await
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
    /// [`herd_proto::api::ContainerSummary`] instead of everything about each container.
    #[serde(default)]
    summary: bool,
}

async fn containers(State(c): State<Arc<Control>>, Query(q): Query<ListQuery>) -> Response {
    if q.summary {
        ([(axum::http::header::CONTENT_TYPE, "application/json")], c.list_summaries_json(q.all)).into_response()
    } else {
        Json(c.list_containers(q.all)).into_response()
    }
}

async fn run(State(c): State<Arc<Control>>, Json(req): Json<RunRequest>) -> Result<(StatusCode, Json<ContainerInfo>)> {
    Ok((StatusCode::CREATED, Json(c.run(req).await?)))
}

async fn inspect(State(c): State<Arc<Control>>, Path(name): Path<String>) -> Result<Json<ContainerInfo>> {
    Ok(Json(c.container(&name)?))
}

#[derive(Deserialize)]
struct MigrationsQuery {
    container: String,
}

/// The journal's records of one container's migrations, oldest first: how `herd migrate`
/// learns whether a request the previous leader never answered started a migration.
async fn migrations(
    State(c): State<Arc<Control>>,
    Query(q): Query<MigrationsQuery>,
) -> Result<Json<Vec<herd_proto::migration::MigrationRecord>>> {
    let (all, _) =
        c.migrations.snapshot().await.map_err(|e| Error::unavailable(format!("reading the migrations: {e:#}")))?;
    let mut mine: Vec<_> = all.into_values().map(|v| v.value).filter(|m| m.container == q.container).collect();
    mine.sort_by_key(|m| m.started_at);
    Ok(Json(mine))
}

/// A migration's journal record: how `herd migrate` learns the outcome of a migration whose
/// progress stream broke (the leader that ran it died; the next one ends it).
async fn migration(
    State(c): State<Arc<Control>>,
    Path(id): Path<String>,
) -> Result<Json<herd_proto::migration::MigrationRecord>> {
    match c.migrations.get(&id).await {
        Ok(Some(m)) => Ok(Json(m.value)),
        Ok(None) => Err(Error::not_found(format!("no such migration: {id}"))),
        Err(e) => Err(Error::unavailable(format!("reading migration {id}: {e:#}"))),
    }
}

#[derive(Deserialize)]
struct StopQuery {
    #[serde(default = "default_stop_timeout")]
    timeout: u64,
}

fn default_stop_timeout() -> u64 {
    10
}

async fn stop(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<ContainerInfo>> {
    Ok(Json(c.stop(&name, q.timeout).await?))
}

/// Runs in its own task, so a client that goes away does not leave it half done.
async fn start(State(c): State<Arc<Control>>, Path(name): Path<String>) -> Result<Json<ContainerInfo>> {
    let task = tokio::spawn(async move { c.start_container(&name).await });
    Ok(Json(task.await.map_err(|e| Error::new(crate::error::Kind::Internal, format!("the start failed: {e}")))??))
}

/// Runs in its own task, as [`start`].
async fn restart(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<StopQuery>,
) -> Result<Json<ContainerInfo>> {
    let task = tokio::spawn(async move { c.restart(&name, q.timeout).await });
    Ok(Json(task.await.map_err(|e| Error::new(crate::error::Kind::Internal, format!("the restart failed: {e}")))??))
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode> {
    c.remove(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// A number of entries, or `all`.
    #[serde(default)]
    tail: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(default)]
    since: Option<u64>,
}

/// `tail=N` or `tail=all` (as Docker, a negative number means all too).
fn parse_tail(tail: Option<&str>) -> Result<Option<u64>> {
    match tail.map(str::trim) {
        None | Some("") | Some("all") => Ok(None),
        Some(n) if n.starts_with('-') && n[1..].bytes().all(|b| b.is_ascii_digit()) && n.len() > 1 => Ok(None),
        Some(n) => n
            .parse()
            .map(Some)
            .map_err(|_| Error::bad_request(format!("invalid tail {n:?}: give a number of lines or \"all\""))),
    }
}

async fn logs(State(c): State<Arc<Control>>, Path(name): Path<String>, Query(q): Query<LogsQuery>) -> Result<Response> {
    let query = crate::containers::LogQuery { follow: q.follow, tail: parse_tail(q.tail.as_deref())?, since: q.since };
    // Fail before the stream starts when the container does not exist or its node is away.
    c.logs_chunk(&name, 0, Some(0)).await?;
    let stream = c.clone().logs_stream(name, query).map(|r| r.map_err(std::io::Error::other));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

async fn update(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Json(req): Json<UpdateRequest>,
) -> Result<Json<ContainerInfo>> {
    Ok(Json(c.update(&name, &req).await?))
}

async fn checkpoint(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Json(req): Json<CheckpointRequest>,
) -> Result<Json<CheckpointInfo>> {
    Ok(Json(c.checkpoint(&name, req.leave_running).await?))
}

/// Streams a checkpoint archive; an error before the first byte is an ordinary error answer.
async fn export_checkpoint(
    State(c): State<Arc<Control>>,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response> {
    let stream = c.export_checkpoint(&name, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], Body::from_stream(stream)).into_response())
}

async fn restore(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Json(req): Json<RestoreRequest>,
) -> Result<Json<ContainerInfo>> {
    Ok(Json(c.restore(&name, &req).await?))
}

#[derive(Deserialize)]
struct RestoreArchiveQuery {
    node: Option<String>,
}

async fn restore_archive(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<RestoreArchiveQuery>,
    body: Body,
) -> Result<Json<ContainerInfo>> {
    Ok(Json(c.restore_archive(&name, q.node.as_deref(), body.into_data_stream()).await?))
}

/// Streams the migration's updates as newline-delimited JSON; the migration goes on if the
/// client disconnects. A migration refused before it starts (bad destination, container not
/// running, ...) is an ordinary error answer.
async fn migrate(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Json(req): Json<MigrateRequest>,
) -> Result<Response> {
    let migration = move |updates| async move { c.migrate(name, req, updates).await };
    stream_updates("migration", migration, MigrateUpdate::Report, MigrateUpdate::Error).await
}

#[derive(Deserialize)]
struct ExecQuery {
    /// The [`herd_proto::exec::ExecRequest`] as JSON.
    request: String,
}

/// `herd exec`: a session on an upgraded connection (see [`crate::exec::handle`]).
async fn exec(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<ExecQuery>,
    req: Request,
) -> Result<Response> {
    crate::exec::handle(c, name, &q.request, req).await
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default = "default_event_limit")]
    limit: usize,
    /// Only events after this sequence number, waiting up to `wait` seconds for one.
    after: Option<u64>,
    #[serde(default)]
    wait: u64,
}

fn default_event_limit() -> usize {
    100
}

async fn events(State(c): State<Arc<Control>>, Query(q): Query<EventsQuery>) -> Result<Json<Vec<Event>>> {
    let limit = q.limit.min(10_000);
    match q.after {
        Some(after) => {
            let wait = std::time::Duration::from_secs(q.wait.min(60));
            Ok(Json(c.events.after(after, limit, wait).await?))
        }
        None => Ok(Json(c.events.recent(limit).await?)),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    /// Comma-separated container names; all running containers when absent.
    #[serde(default)]
    names: String,
}

async fn stats(
    State(c): State<Arc<Control>>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<Vec<herd_proto::api::ContainerStats>>> {
    let names: Vec<String> = q.names.split(',').filter(|n| !n.is_empty()).map(str::to_string).collect();
    Ok(Json(c.stats(&names)?))
}

#[derive(Deserialize)]
struct SeriesQuery {
    /// Start, ms since the Unix epoch (default: an hour ago).
    from: Option<u64>,
    /// End, ms since the Unix epoch (default: now).
    to: Option<u64>,
    /// Bucket width in ms (default: the stored resolution).
    step: Option<u64>,
}

impl SeriesQuery {
    /// `from` and `to`, with their defaults.
    fn range(&self) -> (u64, u64) {
        let to = self.to.unwrap_or_else(herd_proto::now_millis);
        (self.from.unwrap_or(to.saturating_sub(3_600_000)), to)
    }
}

async fn series(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<herd_metrics::history::QueryResult>> {
    let (from, to) = q.range();
    Ok(Json(c.series(&name, from, to, q.step)?))
}

async fn node_stats(State(c): State<Arc<Control>>) -> Json<Vec<herd_proto::api::NodeStats>> {
    Json(c.node_stats())
}

async fn node_series(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<herd_metrics::history::QueryResult>> {
    let (from, to) = q.range();
    Ok(Json(c.node_series(&name, from, to, q.step)?))
}

async fn policy(State(c): State<Arc<Control>>) -> Json<herd_proto::policy::PolicyInfo> {
    Json(c.policy_info())
}

async fn set_policy(
    State(c): State<Arc<Control>>,
    Json(req): Json<herd_proto::policy::SetPolicyRequest>,
) -> Result<Json<herd_proto::policy::PolicyInfo>> {
    Ok(Json(c.set_policy(&req).await?))
}

async fn reset_policy(State(c): State<Arc<Control>>) -> Result<Json<herd_proto::policy::PolicyInfo>> {
    Ok(Json(c.reset_policy().await?))
}

async fn policy_decisions(
    State(c): State<Arc<Control>>,
    Query(q): Query<EventsQuery>,
) -> Json<Vec<herd_proto::policy::PolicyDecision>> {
    Json(c.policy_decisions(q.limit))
}

/// Prometheus's scrape endpoint (text format 0.0.4), behind the same token as the API
/// (`bearer_token` in Prometheus's scrape config).
async fn metrics(State(c): State<Arc<Control>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], c.prometheus_text()).into_response()
}

/// Runs a long operation (a pull, a migration) in a task of its own, so that it goes on if the
/// client disconnects, and answers with its updates as they come, one JSON object per line,
/// ending with `report` of its outcome (or `error` of its failure). An operation that fails
/// before its first update gets an ordinary error answer.
async fn stream_updates<U, R, F>(
    what: &'static str,
    run: impl FnOnce(tokio::sync::mpsc::Sender<U>) -> F + Send + 'static,
    report: fn(R) -> U,
    error: fn(String) -> U,
) -> Result<Response>
where
    U: serde::Serialize + Send + 'static,
    R: Send + 'static,
    F: std::future::Future<Output = Result<R>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<U>>(64);
    tokio::spawn(async move {
        let (updates_tx, mut updates_rx) = tokio::sync::mpsc::channel::<U>(64);
        let relay = {
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(u) = updates_rx.recv().await {
                    if tx.send(Ok(u)).await.is_err() {
                        break;
                    }
                }
            })
        };
        let result = run(updates_tx).await;
        let _ = relay.await;
        let _ = tx.send(result.map(report)).await;
    });
    let first = match rx.recv().await {
        Some(Ok(u)) => u,
        Some(Err(e)) => return Err(e),
        None => return Err(Error::new(crate::error::Kind::Internal, format!("the {what} ended without a word"))),
    };
    let rest = futures::stream::unfold(rx, move |mut rx| async move {
        let update = match rx.recv().await? {
            Ok(u) => u,
            Err(e) => error(e.message),
        };
        Some((update, rx))
    });
    let lines = futures::stream::once(async move { first }).chain(rest).map(|u| {
        let mut line = serde_json::to_vec(&u).expect("updates serialize");
        line.push(b'\n');
        Ok::<_, std::io::Error>(bytes::Bytes::from(line))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

#[cfg(test)]
mod tests {
    use super::{parse_tail, token_matches};

    #[test]
    fn tails_are_numbers_or_all() {
        assert_eq!(parse_tail(None).unwrap(), None);
        assert_eq!(parse_tail(Some("all")).unwrap(), None);
        assert_eq!(parse_tail(Some("-1")).unwrap(), None);
        assert_eq!(parse_tail(Some("0")).unwrap(), Some(0));
        assert_eq!(parse_tail(Some("25")).unwrap(), Some(25));
        assert!(parse_tail(Some("ten")).unwrap_err().message.contains("invalid tail \"ten\""));
        assert!(parse_tail(Some("-")).is_err());
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches(b"abc", b"abc"));
        assert!(!token_matches(b"abd", b"abc"));
        assert!(!token_matches(b"ab", b"abc"));
        assert!(!token_matches(b"", b"abc"));
    }
}
