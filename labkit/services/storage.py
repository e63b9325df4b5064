"""The S3 object store: two versitygw gateways over one data root.

Each versitygw process sends its S3 events to one target only. Uploads go
through ``storage``, whose events go to Kafka; the action writes its output
through ``storage-out``, whose events go to Node-RED's webhook.
"""

from __future__ import annotations

from labkit.hops import hop_address, hop_url
from labkit.install import GoBinary, InstallStep
from labkit.readiness import HttpReady, Readiness
from labkit.services.base import Service
from labkit.versions import pin

TOPIC = "dit247"
WEBHOOK_PATH = "/hooks/{token}/object-created"


class _Gateway(Service):
    pin_key = "versitygw"
    hint = "versitygw sends a test event at start, so its event target must be up first"

    def install_step(self) -> InstallStep:
        p = pin("versitygw")
        return GoBinary("versitygw", p["version"], package=p["go_package"], binary=p["binary"])

    @property
    def root(self):
        """The data root both gateways share."""
        return self.config.data_dir / "s3"

    def port(self) -> int:
        return self.ports[self.port_names[0]]

    def environment(self) -> dict[str, str]:
        s = self.ctx.secrets
        return {"ROOT_ACCESS_KEY": s.s3_access_key.get_secret_value(),
                "ROOT_SECRET_KEY": s.s3_secret_key.get_secret_value()}

    def command(self) -> list[str]:
        binary = self.install_step().target(self.config.cache_dir) / "versitygw"
        return [str(binary), "--port", f"{self.host}:{self.port()}", "--health", "/health",
                "--quiet", *self.event_flags(), "posix", str(self.root)]

    def event_flags(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def readiness(self) -> Readiness:
        return HttpReady(f"{self.endpoint()}/health")

    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port()}"


class Storage(_Gateway):
    """The upload gateway; its ObjectCreated events go to Kafka topic ``dit247``."""

    name = "storage"
    port_names = ("storage",)
    after = ("kafka", "toxiproxy")

    def event_flags(self) -> list[str]:
        return ["--event-kafka-url", hop_address(self.config, "store-kafka"), "--event-kafka-topic", TOPIC]


class StorageOut(_Gateway):
    """The gateway the action writes through; its events go to Node-RED's webhook."""

    name = "storage-out"
    port_names = ("storage-out",)
    after = ("nodered", "toxiproxy")
    output_has_secrets = True  # versitygw prints the webhook URL, and the URL carries the token

    def webhook_url(self) -> str:
        token = self.ctx.secrets.webhook_token.get_secret_value()
        return hop_url(self.config, "store-webhook") + WEBHOOK_PATH.format(token=token)

    def event_flags(self) -> list[str]:
        return []

    def environment(self) -> dict[str, str]:
        # The hook's URL carries its secret, so it goes in the environment, not argv.
        return {**super().environment(), "VGW_EVENT_WEBHOOK_URL": self.webhook_url()}
