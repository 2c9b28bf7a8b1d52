# One image for every shardnet role; the compose file picks the role with `command`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY proto proto
COPY src src
COPY node node
COPY coordinator coordinator
RUN pip install --no-cache-dir .
ENTRYPOINT ["shardnet"]
