"""NotificationChannel: Rekognition's job-completion message, published to an SNS topic.

The endpoint is configured like the S3 one (`sns_endpoint_url`, region, keys): AWS SNS, moto or
LocalStack. A request naming a channel on a server without an endpoint is refused at once
(InvalidParameterException), never accepted and then silently not notified.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..context import RequestContext
from ..errors import AccessDeniedException, InvalidParameterException
from ..settings import Settings
from ..text import logger, shown

log = logger("faceledger.video")


def check_channel(channel: Any, settings: Settings,
                  ctx: RequestContext) -> dict[str, str] | None:
    """The NotificationChannel {SNSTopicArn, RoleArn}, if given, deliverable and allowed.

    The server publishes with its own SNS credentials, so RoleArn (AWS: the role Rekognition
    assumes) authorises nothing here: each key names the topics it may notify (`keys create
    --sns-topic`); any other topic is refused with AccessDeniedException."""
    if channel is None:
        return None
    if not isinstance(channel, dict) or not isinstance(channel.get("SNSTopicArn"), str) or \
            not isinstance(channel.get("RoleArn"), str):
        raise InvalidParameterException("NotificationChannel needs SNSTopicArn and RoleArn.")
    if not settings.sns_endpoint_url:
        raise InvalidParameterException(
            "NotificationChannel cannot be delivered: this server has no SNS endpoint "
            "configured (set FACELEDGER_SNS_ENDPOINT_URL). Poll GetFace* instead.")
    if not ctx.may_notify(channel["SNSTopicArn"]):
        raise AccessDeniedException(
            f"Key {ctx.principal} may not publish to SNS topic {shown(channel['SNSTopicArn'])} "
            "(allow it with `faceledger keys create ... --sns-topic ARN`).")
    return {"SNSTopicArn": channel["SNSTopicArn"], "RoleArn": channel["RoleArn"]}


def completion_message(job_id: str, status: str, api: str, job_tag: str | None,
                       video: dict[str, Any]) -> dict[str, Any]:
    """The message body Rekognition Video publishes when a job ends."""
    message: dict[str, Any] = {
        "JobId": job_id,
        "Status": status,
        "API": api,
        "Timestamp": int(time.time() * 1000),
        "Video": {"S3ObjectName": video.get("Name"), "S3Bucket": video.get("Bucket")},
    }
    if job_tag is not None:
        message["JobTag"] = job_tag
    return message


def publish(settings: Settings, topic_arn: str, message: dict[str, Any]) -> None:
    """Publish `message` (as JSON) to the topic; failures are logged, the job stands."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    secret = settings.sns_secret_access_key
    client = boto3.session.Session().client(
        "sns", endpoint_url=settings.sns_endpoint_url, region_name=settings.sns_region,
        aws_access_key_id=settings.sns_access_key_id,
        aws_secret_access_key=None if secret is None else secret.get_secret_value(),
        config=Config(connect_timeout=5, read_timeout=15,
                      retries={"max_attempts": 3, "mode": "standard"}))
    try:
        client.publish(TopicArn=topic_arn, Message=json.dumps(message))
    except (BotoCoreError, ClientError) as exc:
        log.error("job %s: could not publish to %s: %s", message.get("JobId"), topic_arn, exc)
