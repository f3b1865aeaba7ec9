# rollguard daemon image. Multi-stage: build a venv from the pinned versions, copy it into a slim runtime.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/rollguard
COPY pyproject.toml constraints.txt README.md ./
COPY daemon ./daemon
RUN /opt/rollguard/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/rollguard /opt/rollguard
ENV PATH=/opt/rollguard/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["rollguard", "run"]
