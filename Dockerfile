# One image for every shardnet role; docker-compose.yml picks the role with `command`.
FROM python:3.11-slim
# Node.js for the pinned Anvil/Forge (npm), GMP and a compiler for py-libp2p's fastecdsa.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm libgmp-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY contracts/package.json contracts/package-lock.json contracts/
RUN npm ci --prefix contracts --no-audit --no-fund
COPY pyproject.toml README.md ./
COPY proto proto
COPY src src
COPY node node
COPY coordinator coordinator
COPY contracts contracts
# Editable, so the chain layer finds Anvil under /app/contracts/node_modules.
RUN pip install --no-cache-dir -e .
ENTRYPOINT ["shardnet"]
