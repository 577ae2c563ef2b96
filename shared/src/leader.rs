//! Leader election for singleton maintenance work, with a PostgreSQL session advisory lock held on a
//! dedicated connection (never a pooled one, where a session lock would leak to the next borrower).
//! If the connection dies, PostgreSQL releases the lock and another process takes over.

use sqlx::{Connection, PgConnection, PgPool};

/// The advisory-lock key of the maintenance leader ("trawl" in ASCII, as a number).
pub const MAINTENANCE_LOCK_KEY: i64 = 0x7472_6177_6c00_0001;

/// One contender for leadership. Call [`LeaderElector::check`] on every maintenance tick.
pub struct LeaderElector {
    /// Where the lock connection goes: the pool's current target, which follows the primary
    /// after a failover.
    pool: PgPool,
    application_name: String,
    key: i64,
    conn: Option<PgConnection>,
    leader: bool,
}

impl LeaderElector {
    pub fn new(pool: PgPool, application_name: &str, key: i64) -> Self {
        Self {
            pool,
            application_name: application_name.to_owned(),
            key,
            conn: None,
            leader: false,
        }
    }

    /// Whether this process leads now: keeps the lock if it has it (verifying the connection is
    /// alive), or tries to take it. Never blocks on another leader.
    pub async fn check(&mut self) -> bool {
        match self.try_check().await {
            Ok(leader) => {
                if leader != self.leader {
                    tracing::info!(leader, "maintenance leadership changed");
                }
                self.leader = leader;
            }
            Err(e) => {
                if self.leader {
                    tracing::warn!(error = %e, "lost the maintenance leader lock");
                }
                self.conn = None;
                self.leader = false;
            }
        }
        self.leader
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    async fn try_check(&mut self) -> Result<bool, sqlx::Error> {
        if self.conn.is_none() {
            let options = self
                .pool
                .connect_options()
                .as_ref()
                .clone()
                .application_name(&self.application_name);
            let mut conn = PgConnection::connect_with(&options).await?;
            // A lock taken on a standby would elect a leader that can write nothing.
            if crate::primary::in_recovery(&mut conn).await? {
                return Ok(false);
            }
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        if self.leader {
            // The lock lives as long as the session; a round trip proves the session is alive
            // (an error here drops the connection and, with it, leadership).
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            return Ok(true);
        }
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(conn)
            .await
    }

    /// Gives up leadership (on shutdown), so a standby takes over without waiting.
    pub async fn resign(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if self.leader {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(self.key)
                    .execute(&mut conn)
                    .await;
            }
            let _ = conn.close().await;
        }
        self.leader = false;
    }
}
