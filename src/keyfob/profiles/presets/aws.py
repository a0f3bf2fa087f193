"""AWS: SigV4-signed requests to ``{service}.{region}.amazonaws.com``."""

from collections.abc import Mapping
from typing import Any

from keyfob.profiles.registry import Field, Preset


def _defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    region = str(options.get("region", "us-east-1"))
    service = str(options.get("service", "s3"))
    host = f"{service}.{region}.amazonaws.com"
    return {
        "base_url": f"https://{host}",
        "hosts": [host],
        "inject": {
            "kind": "aws_sigv4",
            "access_key_id": "AWS_ACCESS_KEY_ID",
            "secret_access_key": "AWS_SECRET_ACCESS_KEY",
            "region": region,
            "service": service,
        },
    }


PRESET = Preset(
    name="aws",
    title="AWS",
    fields=(
        Field("AWS_ACCESS_KEY_ID", "Access key id", secret=False),
        Field("AWS_SECRET_ACCESS_KEY", "Secret access key"),
    ),
    defaults=_defaults,
    options=("region", "service"),
    docs_url="https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html",
)
