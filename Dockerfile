# The netpol-learn image: `netpol-learn sniff` in the sniffer DaemonSet (netpol-learn manifests),
# and every other command. Build it from the repository root and push it where the nodes pull:
#   docker build -t registry.example/netpol-learn:0.1.0 .
#   docker push registry.example/netpol-learn:0.1.0
#   netpol-learn manifests --image registry.example/netpol-learn:0.1.0 | kubectl apply -f -

# --- build: the package and its dependencies in a virtual environment, with a C compiler for the
# capture stage's optional accelerator (without one, pip builds the package without it).
FROM python:3.11-slim AS build
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/netpol-learn
ENV PATH=/opt/netpol-learn/bin:$PATH
WORKDIR /src
# .dockerignore lets in only what the package is built from.
COPY . .
RUN pip install --no-cache-dir . \
 && netpol-learn --version

# --- run: the virtual environment on a clean base, without the compiler.
FROM python:3.11-slim
# libpcap compiles capture filters for `sniff` (through scapy); Debian 13 calls the package
# libpcap0.8t64, Debian 12 libpcap0.8, and python:3.11-slim has been either.
# hadolint ignore=DL3008
RUN apt-get update \
 && (apt-get install -y --no-install-recommends libpcap0.8t64 || apt-get install -y --no-install-recommends libpcap0.8) \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin netpol-learn
COPY --from=build /opt/netpol-learn /opt/netpol-learn
ENV PATH=/opt/netpol-learn/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Not root by default. The sniffer DaemonSet runs it as UID 0 with NET_RAW as its only
# capability, because Kubernetes hands added capabilities to root only (see its manifest).
USER 10001:10001
ENTRYPOINT ["netpol-learn"]
CMD ["--help"]
