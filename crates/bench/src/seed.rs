//! The benchmark's own database, seeded in bulk with SQL.

use diesel::sql_types::{BigInt, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use disconnect_testkit::services::admin_url;
use disconnect_testkit::TestDatabase;
use disconnect_worker::db::DbPool;
use rand::seq::SliceRandom;
use rand::Rng;

use super::{population, Args};

pub struct BenchEnv {
    pub database: TestDatabase,
    pub pool: DbPool,
    /// A population's database, kept when the run ends.
    kept: bool,
}

impl BenchEnv {
    /// A new database on the server of `--database-url`, with the schema.
    /// With `--population-tokens`, the population's kept database instead.
    pub async fn create(args: &Args) -> anyhow::Result<Self> {
        let admin = admin_url(&args.database_url);
        let (database, kept) = if args.population_tokens > 0 {
            let name =
                population::database_name(args.population_tokens, args.tokens_per_connection);
            (TestDatabase::kept(&admin, &name).await?.0, true)
        } else {
            (
                TestDatabase::create(&admin, "disconnect_bench").await?,
                false,
            )
        };
        let pool = database.pool_named(args.db_concurrency + 2, "disconnect-bench");
        super::writes::prepare(&pool).await?;
        Ok(Self {
            database,
            pool,
            kept,
        })
    }

    pub async fn drop_database(&self) {
        self.pool.close();
        if !self.kept {
            self.database.drop_database().await;
        }
    }

    /// Seed the population unless a complete one is there; tidy what earlier
    /// runs left beside it; measure it at rest.
    pub async fn prepare_population(&self, args: &Args) -> anyhow::Result<population::AtRest> {
        if population::is_seeded(&self.pool).await? {
            eprintln!("population: reusing {}", self.database.name);
            population::tidy(&self.pool).await?;
        } else {
            eprintln!(
                "population: seeding {} tokens into {}...",
                args.population_tokens, self.database.name
            );
            population::seed(
                &self.pool,
                args.population_tokens,
                args.tokens_per_connection,
            )
            .await?;
        }
        let mut at_rest = population::at_rest(&self.pool).await?;
        if args.prewarm {
            at_rest.prewarmed_blocks = Some(population::prewarm(&self.pool).await?);
        }
        // The seeding sessions report their counts as they exit, not inside
        // a measured run.
        self.pool.retain(|_, _| false);
        Ok(at_rest)
    }

    /// The tokens a measured run names: one of each of `--connections`
    /// connections, seeded for the run, or picked from the population.
    pub async fn tokens_for_run(&self, args: &Args, label: &str) -> anyhow::Result<Vec<String>> {
        if args.population_tokens > 0 {
            let tokens =
                population::pick(&self.pool, args.connections, args.tokens_per_connection).await;
            self.pool.retain(|_, _| false);
            tokens
        } else {
            self.seed_connections(
                &format!("e2e-{label}"),
                args.connections,
                args.tokens_per_connection,
            )
            .await
        }
    }

    /// `connections` active connections of the application `client` with
    /// `tokens` tokens each; returns one token of each connection, chosen at
    /// random, for the requests, in random order. Token `j` of company `i`
    /// is the text `bench-<client>-<i>-<j>`, so the seed can hash it in SQL.
    /// The rows are shaped as `token issue` writes them (a prefix, a user
    /// label, three products), as the population's are
    /// (`population::seed`), so the two runs differ only in size.
    ///
    /// In random order because disconnects arrive so: from many
    /// applications, for connections made at different times. In seed
    /// order, one batch names neighbouring connections, whose tokens share
    /// pages, and revokes whole pages in one transaction, which is a
    /// fan-out's pattern (measured by `--fanout-connections`).
    pub async fn seed_connections(
        &self,
        client: &str,
        connections: usize,
        tokens: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut conn = self.pool.get().await?;
        diesel::sql_query(
            "INSERT INTO connections (id, client_id, company_id, provider_id, status) \
             SELECT gen_random_uuid(), $1, i::text, 'gusto', 'active' FROM generate_series(1, $2) AS i",
        )
        .bind::<Text, _>(client)
        .bind::<BigInt, _>(connections as i64)
        .execute(&mut conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO access_tokens (id, connection_id, token_hash, token_prefix, user_label, products) \
             SELECT gen_random_uuid(), c.id, sha256(convert_to('bench-' || c.client_id || '-' || c.company_id || '-' || j, 'UTF8')), \
                    'dwt_' || substr(md5(c.id::text || j), 1, 4), 'user-' || j, '{company,directory,individual}' \
             FROM connections AS c, generate_series(1, $2) AS j WHERE c.client_id = $1 ORDER BY c.company_id, j",
        )
        .bind::<Text, _>(client)
        .bind::<BigInt, _>(tokens as i64)
        .execute(&mut conn)
        .await?;
        diesel::sql_query("ANALYZE connections, access_tokens")
            .execute(&mut conn)
            .await?;
        // Close the seeding sessions: an idle session reports its row counts
        // up to 10 s late, inside the measured run; one that exits, at once.
        drop(conn);
        self.pool.retain(|_, _| false);
        let mut rng = rand::rng();
        let mut requests: Vec<String> = (1..=connections)
            .map(|company| format!("bench-{client}-{company}-{}", rng.random_range(1..=tokens)))
            .collect();
        requests.shuffle(&mut rng);
        Ok(requests)
    }

    /// Token rows on connections no request names, in chunks of a million.
    pub async fn seed_padding(&self, rows: usize) -> anyhow::Result<()> {
        const TOKENS_PER_CONNECTION: usize = 10;
        let mut seeded = 0;
        let mut chunk = 0;
        while seeded < rows {
            let count = (rows - seeded).min(1_000_000);
            self.seed_connections(
                &format!("padding{chunk}"),
                count.div_ceil(TOKENS_PER_CONNECTION),
                TOKENS_PER_CONNECTION,
            )
            .await?;
            seeded += count.div_ceil(TOKENS_PER_CONNECTION) * TOKENS_PER_CONNECTION;
            chunk += 1;
            eprintln!("  {seeded} padding rows");
        }
        self.vacuum().await
    }

    /// A table of that size in service has been vacuumed long ago. Left to
    /// itself, autovacuum would scan the fresh rows during the measured
    /// runs, and its CPU would be counted as the worker's load.
    pub async fn vacuum(&self) -> anyhow::Result<()> {
        eprintln!("  vacuuming...");
        let mut conn = self.pool.get().await?;
        conn.batch_execute("VACUUM (ANALYZE) connections, access_tokens")
            .await?;
        Ok(())
    }

    /// Print the plans of the statements a disconnect runs, on real rows.
    pub async fn explain(&self) -> anyhow::Result<()> {
        #[derive(diesel::QueryableByName)]
        struct Line {
            #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
            line: String,
        }
        let tokens = self.seed_connections("explain", 2, 3).await?;
        let mut conn = self.pool.get().await?;
        #[derive(diesel::QueryableByName)]
        struct Ids {
            #[diesel(sql_type = Text)]
            ids: String,
        }
        // The statements exactly as the worker sends them, with its arrays
        // written out: the ids of the two connections just seeded.
        let ids: Ids = diesel::sql_query(
            "SELECT string_agg(id::text, ',') AS ids FROM connections WHERE client_id = 'explain'",
        )
        .get_result(&mut conn)
        .await?;
        let ids = format!("'{{{}}}'::uuid[]", ids.ids);
        let hashes = format!(
            "ARRAY[sha256(convert_to('{}', 'UTF8')), sha256(convert_to('{}', 'UTF8'))]",
            tokens[0], tokens[1]
        );
        let statements = [
            format!(
                "SELECT token_hash, id, connection_id FROM access_tokens WHERE token_hash = ANY({hashes})"
            ),
            format!(
                "SELECT id, client_id, company_id, provider_id, status FROM connections \
                 WHERE id = ANY(ARRAY(SELECT connection_id FROM access_tokens \
                 WHERE token_hash = ANY({hashes})) || '{{}}'::uuid[]) ORDER BY id FOR UPDATE"
            ),
            format!(
                "SELECT t.id, t.connection_id FROM access_tokens AS t \
                 WHERE t.revoked_at IS NULL AND t.connection_id = ANY(ARRAY(\
                 SELECT connection_id FROM access_tokens WHERE token_hash = ANY({hashes})) \
                 || '{{}}'::uuid[])"
            ),
            format!(
                "UPDATE access_tokens AS t SET revoked_at = now(), revoked_by_request = v.request_id \
                 FROM unnest({ids}, ARRAY[gen_random_uuid(), gen_random_uuid()]) AS v (connection_id, request_id) \
                 WHERE t.connection_id = v.connection_id AND t.revoked_at IS NULL"
            ),
        ];
        conn.batch_execute("BEGIN").await?;
        for statement in statements {
            println!("\nEXPLAIN ANALYZE {statement}");
            let plan: Vec<Line> =
                diesel::sql_query(format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {statement}"))
                    .load(&mut conn)
                    .await?;
            for line in plan {
                println!("  {}", line.line);
            }
        }
        conn.batch_execute("ROLLBACK").await?;
        Ok(())
    }
}
