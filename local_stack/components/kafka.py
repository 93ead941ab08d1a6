"""Apache Kafka as one KRaft node that is broker and controller at once."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import string
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from local_stack import build, processes
from local_stack.components.base import Component
from local_stack.errors import ComponentFailedError, MissingPrerequisiteError

logger = logging.getLogger(__name__)

#: Oldest Java release that Kafka 4 brokers run on.
_MIN_JAVA_MAJOR = 17


class Kafka(Component):
    """Kafka started from the jars that Maven resolved into the cache."""

    name = "kafka"
    port_variables = (
        "POD_MONITOR_STACK_KAFKA_PORT",
        "POD_MONITOR_STACK_KAFKA_CONTROLLER_PORT",
    )
    stop_timeout = 30.0

    @property
    def ports(self) -> Sequence[int]:
        """Broker port, then controller port."""
        return (self.config.kafka_port, self.config.kafka_controller_port)

    @property
    def _data_dir(self) -> str:
        return str(self.directory / "data")

    @property
    def _properties_path(self) -> str:
        return str(self.directory / "server.properties")

    def check_prerequisites(self) -> None:
        """Require Java 17 or newer, and Maven when the jars are not resolved.

        Both are checked before raising, so one message lists every gap.
        """
        problems = []
        try:
            build.require_maven_if_unresolved(self.config.cache_dir)
        except MissingPrerequisiteError as error:
            problems.append(str(error))
        try:
            self._check_java()
        except MissingPrerequisiteError as error:
            problems.append(str(error))
        if problems:
            raise MissingPrerequisiteError("\n  ".join(problems))

    def _check_java(self) -> None:
        java = build.require_tool(
            "java",
            "run Kafka",
            "Install OpenJDK 17 or newer, for example "
            "`apt-get install -y openjdk-17-jre-headless`.",
        )
        result = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in result.stderr.splitlines():
            if "java.specification.version" in line:
                major = int(line.split("=")[1].strip().split(".")[0])
                if major < _MIN_JAVA_MAJOR:
                    raise MissingPrerequisiteError(
                        f"java at {java} is version {major}, but Kafka needs "
                        f"{_MIN_JAVA_MAJOR} or newer; install OpenJDK 17"
                    )

    def ensure_built(self) -> None:
        """Resolve Kafka's jars unless they are cached."""
        build.ensure_kafka_libs(self.config.cache_dir)

    def prepare(self) -> None:
        """Write server.properties and format the data folder on first use.

        The format records the controller's address in the data folder, so a
        changed controller port means the old data cannot be used. Test data
        is disposable, so the folder is then formatted anew.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        template = string.Template(
            (build.KAFKA_DIR / "server.properties.in").read_text()
        )
        properties = template.substitute(
            broker_port=self.config.kafka_port,
            controller_port=self.config.kafka_controller_port,
            data_dir=self._data_dir,
        )
        (self.directory / "server.properties").write_text(properties)

        format_record = self.directory / "format.json"
        expected = {"controller_port": self.config.kafka_controller_port}
        formatted = (self.directory / "data" / "meta.properties").exists()
        if formatted and format_record.exists():
            if json.loads(format_record.read_text()) == expected:
                return
            logger.info(
                "kafka: controller port changed, formatting %s anew", self._data_dir
            )
        shutil.rmtree(self._data_dir, ignore_errors=True)
        self._format(format_record, expected)

    def _format(self, format_record: Path, expected: dict[str, int]) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        argv = [
            *self._java_prefix(),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            cluster_id,
            "--config",
            self._properties_path,
        ]
        with self.log_path.open("a") as log:
            log.write(f"\n==== local_stack formatting: {' '.join(argv)}\n")
            log.flush()
            result = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=120
            )
        if result.returncode != 0:
            raise ComponentFailedError(
                self.name,
                f"kafka.tools.StorageTool format exited with {result.returncode}",
                self.log_path,
            )
        format_record.write_text(json.dumps(expected))

    def _java_prefix(self) -> list[str]:
        libs = build.kafka_libs_dir(self.config.cache_dir)
        heap = f"{self.config.kafka_heap_mb}m"
        return [
            "java",
            f"-Xmx{heap}",
            f"-Xms{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={build.KAFKA_DIR / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp",
            f"{libs}/*",
        ]

    def command(self) -> Sequence[str]:
        """Return the java argv that runs kafka.Kafka."""
        return [*self._java_prefix(), "kafka.Kafka", self._properties_path]

    def owns_cmdline(self, cmdline: str) -> bool:
        """Match kafka.Kafka started with this stack's server.properties."""
        return "kafka.Kafka" in cmdline and self._properties_path in cmdline

    def check_health(self) -> str | None:
        """Fetch cluster metadata with an admin client and expect broker 1.

        The port is probed first, because librdkafka logs every refused
        connection to standard error.
        """
        if not processes.port_accepts(self.config.kafka_port):
            return f"port {self.config.kafka_port} refuses connections"
        admin = AdminClient({"bootstrap.servers": self.config.kafka_bootstrap_servers})
        try:
            metadata = admin.list_topics(timeout=3)
        except KafkaException as error:
            return f"metadata request failed: {error}"
        if 1 not in metadata.brokers:
            return f"metadata lists brokers {sorted(metadata.brokers)}, not node 1"
        return None
