# One image for every role: `docker run trace <role>[,<role>...]` (default: all).

# --- build: compile TypeScript, then keep only production dependencies ---------------------------
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json nest-cli.json ./
COPY src ./src
COPY migrations ./migrations
RUN npm run build && npm prune --omit=dev

# --- duckdb extensions: httpfs (S3) and postgres, installed at build time for production ----------
# DuckDB looks for extensions under $HOME/.duckdb; the runtime user's home is /var/lib/trace.
# The Query Service uses them when present and works without them.
FROM build AS duckdb-extensions
ENV HOME=/duckdb-home
RUN mkdir -p /duckdb-home && node -e "\
  const { DuckDBInstance } = require('@duckdb/node-api');\
  (async () => {\
    const c = await (await DuckDBInstance.create(':memory:')).connect();\
    for (const ext of ['httpfs', 'postgres']) await c.run('INSTALL ' + ext);\
  })().catch((e) => { console.error(e); process.exit(1); });"

# --- runtime: no compilers, no dev dependencies -------------------------------------------------
# Roles run as the non-root user `trace`, except a process with the wrapper role: it starts as root
# so that it can give each task its own uid and namespaces (TRACE_SANDBOX=auto → isolated; ADR 0020).
# That needs the container to be allowed to create namespaces and mount: on ECS on EC2,
# linuxParameters.capabilities.add = ["SYS_ADMIN"]; with docker run, --cap-add SYS_ADMIN plus a
# seccomp/AppArmor profile that allows unshare and mount. Without them the wrapper refuses user code
# (built-in operators still run) instead of running it unconfined.
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production \
    TRACE_DATA_DIR=/var/lib/trace \
    PORT=8080
WORKDIR /app
# python3 for Python user-code operators; unshare, setpriv, prlimit and mount (util-linux) are already in the base.
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system trace && useradd --system --gid trace --home-dir /var/lib/trace --create-home trace
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
COPY --chown=root:root package.json ./
COPY --chown=root:root config ./config
COPY --from=duckdb-extensions --chown=trace:trace /duckdb-home/.duckdb /var/lib/trace/.duckdb
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# The role list is the command: `docker run trace registry`, `docker run trace dispatcher,sink`.
ENTRYPOINT ["/bin/sh", "-c", "case \",$1,\" in *,wrapper,*|*,all,*) exec node dist/src/main.js --role \"$1\" ;; *) exec setpriv --reuid=trace --regid=trace --init-groups -- node dist/src/main.js --role \"$1\" ;; esac", "trace"]
CMD ["all"]
