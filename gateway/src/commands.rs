//! A member's commands on their way to the session's owner. The socket's task
//! only queues them; a task of the member's own publishes them one at a time, in
//! order, each retried under one msg id (so nothing is stored twice) while the
//! command stream has no leader, as when the NATS node leading it died and Raft
//! elects another (5–7 s measured on three nodes), for up to `COMMAND_PATIENCE`.
//! So ticks and pongs keep flowing to the member while a command waits, and a
//! command sent during the election takes effect once it is over. Started by a
//! member's first command: most members never send one. A command that cannot
//! be published in time is answered `unavailable`.

use crate::AppState;
use crate::mailbox::{Mailbox, Outbound, text_frame};
use crate::token::Claims;
use bandsync_nats::wire::ErrorMsg;
use bandsync_nats::{Command, ErrorCode, ServerMsg};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Commands a member may have waiting; beyond it a command is refused at once.
/// The rate limit lets 40 through in a burst and 20 a second, so only a member
/// sending at the limit through a whole election gets here.
const QUEUE: usize = 64;
/// How long a command may wait for the bus before it is refused: past the
/// longest leader election measured (6.6 s), with room.
pub const COMMAND_PATIENCE: Duration = Duration::from_secs(10);
/// What a member is told when its command could not reach the owner in time.
pub const UNREACHABLE: &str = "the session owner is unreachable; try again";

/// The sending end of a member's queue (one pointer in the connection's state).
pub struct CommandQueue {
    tx: mpsc::Sender<Queued>,
}

struct Queued {
    command: Command,
    client_ref: Option<String>,
}

impl CommandQueue {
    /// Starts the member's publisher on the gateway's tracked tasks.
    pub fn start(app: &Arc<AppState>, claims: &Claims, mailbox: &Arc<Mailbox>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        app.tasks.spawn(publish_in_order(
            app.clone(),
            claims.clone(),
            mailbox.clone(),
            rx,
        ));
        Self { tx }
    }

    /// Queues a command behind the member's others; false when the queue is full.
    pub fn push(&self, command: Command, client_ref: Option<String>) -> bool {
        self.tx
            .try_send(Queued {
                command,
                client_ref,
            })
            .is_ok()
    }

    /// Queues the connection's last command (its `bye`) behind the others, so
    /// it cannot overtake them, and lets the publisher end after it.
    pub async fn finish(self, bye: Command) {
        let last = Queued {
            command: bye,
            client_ref: None,
        };
        if self.tx.send(last).await.is_err() {
            tracing::debug!("the command publisher ended before the bye");
        }
    }
}

async fn publish_in_order(
    app: Arc<AppState>,
    claims: Claims,
    mailbox: Arc<Mailbox>,
    mut rx: mpsc::Receiver<Queued>,
) {
    while let Some(q) = rx.recv().await {
        let published = crate::conn::publish(&app, &claims, q.command, q.client_ref.clone()).await;
        if let Err(e) = published {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "command not published"
            );
            let refusal = ErrorMsg::new(ErrorCode::Unavailable, UNREACHABLE, q.client_ref);
            let text = serde_json::to_string(&ServerMsg::Error(refusal))
                .expect("server messages serialise");
            // A member whose queue is full is being dropped as slow anyway.
            let _ = mailbox.push_event(Outbound::Error {
                frame: text_frame(text.as_bytes()),
            });
        }
    }
}
