"""The device API: thin views over the device workflows (devices.registration, provisioning, lifecycle)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from accounts import roles
from accounts.permissions import ActionPermission
from api.ordering import StrictOrderingFilter
from api.schema import error_responses, list_parameters
from devices import idempotency
from devices.api.filters import MAX_EXPIRY_DAYS, MAX_SEARCH_LENGTH, DeviceFilter
from devices.api.serializers import (
    AwaitingEnrollmentSerializer,
    BundleSerializer,
    DeviceSerializer,
    RegisterRequestSerializer,
    RegistrationSerializer,
    ReissueRequestSerializer,
    RevokeRequestSerializer,
    awaiting_enrollment_representation,
    device_representation,
    registration_representation,
)
from devices.lifecycle import delete_device, get_device, issue_new_bundle, reissue_device, revoke_device
from devices.models import Device
from devices.provisioning import retry_provisioning
from devices.registration import Registration, RegistrationRequest, register_device
from devices.renewal import request_renewal
from enrollment.enroll import register_for_enrollment
from kernel.addresses import client_address
from kernel.tasks import TaskQueueUnavailable
from onboard_cli import vocabulary
from pki.profiles import KeyType, RevocationReason


def _accepted_or_created(registration: Registration) -> Response:
    """201 with the certificate when it was made in this request; 202 while a worker makes it,
    with Location naming where to follow the device from pending to active (or failed)."""
    answer = registration_representation(registration)
    if registration.issued is not None:
        return Response(answer, status=status.HTTP_201_CREATED)
    response = Response(answer, status=status.HTTP_202_ACCEPTED)
    response["Location"] = reverse("v1:device-detail", kwargs={"pk": registration.device.pk})
    return response


# What any call can answer: no or bad credentials (401), a role without the right (403), a path
# and query too long for the HTTP server (414), the throttle (429), a dependency down (503); and
# what a JSON body can add: invalid fields or malformed JSON (400), over API_MAX_BODY_BYTES (413),
# not JSON (415).
EVERY_CALL = (401, 403, 414, 429, 503)
JSON_BODY = (400, 413, 415)

ORDERING_FIELDS = ["created_at", "updated_at", "name", "status"]

DEVICE_ID = OpenApiParameter(
    "id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="the device's id; anything that is not a UUID names no device (404)",
)

# Response headers. Location: where to follow a device a worker is still provisioning (202).
FOLLOW_AT = OpenApiParameter(
    "Location",
    {"type": "string"},
    OpenApiParameter.HEADER,
    response=[202],
    required=True,
    description="the device's address (/api/v1/devices/{id}), to follow it from pending to active or failed",
)
REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    {"type": "string", "enum": ["true"]},
    OpenApiParameter.HEADER,
    response=[201, 202],
    description="present on the stored answer to a retried request with the same Idempotency-Key",
)

# A registration answers the device with its ZIP link and password, or (delivery est) with its
# enrolment code.
REGISTERED = PolymorphicProxySerializer(
    component_name="RegisteredDevice",
    serializers=[RegistrationSerializer, AwaitingEnrollmentSerializer],
    resource_type_field_name=None,
)

IDEMPOTENCY_HEADER = OpenApiParameter(
    idempotency.HEADER,
    {
        "type": "string",
        "minLength": idempotency.MIN_KEY_LENGTH,
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": r"^[\x21-\x7e]+$",
    },
    OpenApiParameter.HEADER,
    required=False,
    description="a unique key (16-255 printable characters, e.g. a UUID): a retry with the same key "
    "gets the first answer instead of registering twice",
)


class DeviceViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[Device]):
    serializer_class = DeviceSerializer
    permission_classes = [ActionPermission]
    action_permissions = {
        "list": roles.VIEW,
        "retrieve": roles.VIEW,
        "create": roles.REGISTER,
        "revoke": roles.REVOKE,
        "reissue": roles.REISSUE,
        "bundle": roles.REISSUE,
        "destroy": roles.REVOKE,
        "retry": roles.REGISTER,
        "request_renewal": roles.REISSUE,
    }
    filter_backends = [DjangoFilterBackend, StrictOrderingFilter]
    filterset_class = DeviceFilter
    ordering_fields = ORDERING_FIELDS
    ordering = ["-created_at"]
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Device]:
        return Device.objects.with_certificates()

    def get_object(self) -> Device:
        return get_device(self.kwargs["pk"])

    @extend_schema(
        summary="List devices",
        parameters=[
            *list_parameters(ORDERING_FIELDS),
            OpenApiParameter(
                "expiring_within_days", {"type": "integer", "minimum": 0, "maximum": MAX_EXPIRY_DAYS}
            ),
            # Django refuses NUL characters in form input; the schema says so.
            OpenApiParameter(
                "search", {"type": "string", "pattern": "^[^\\u0000]*$", "maxLength": MAX_SEARCH_LENGTH}
            ),
        ],
        responses={200: DeviceSerializer(many=True), **error_responses(400, 404, *EVERY_CALL)},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Device status and certificate",
        parameters=[DEVICE_ID],
        responses={200: DeviceSerializer, **error_responses(404, *EVERY_CALL)},
    )
    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(device_representation(self.get_object()))

    @extend_schema(
        summary="Register a device",
        request=RegisterRequestSerializer,
        parameters=[IDEMPOTENCY_HEADER, FOLLOW_AT, REPLAYED],
        responses={
            201: REGISTERED,
            202: RegistrationSerializer,
            **error_responses(*JSON_BODY, 409, 422, *EVERY_CALL),
        },
    )
    def create(self, request: Request) -> Response:
        def register(claim: idempotency.Claim) -> Response:
            payload = RegisterRequestSerializer(data=request.data)
            payload.is_valid(raise_exception=True)
            fields = payload.validated_data
            answers: list[Response] = []
            registration = RegistrationRequest(
                name=fields["name"],
                hardware_id=fields.get("hardware_id"),
                csr_pem=fields.get("csr"),
                key_type=KeyType(fields.get("key_type", KeyType.RSA2048)),
                metadata=fields.get("metadata", {}),
            )
            if fields.get("delivery") == vocabulary.DELIVERY_EST:
                register_for_enrollment(
                    registration,
                    actor=request.user,
                    address=client_address(request),
                    on_recorded=lambda awaiting: answers.append(
                        claim.keep(
                            Response(
                                awaiting_enrollment_representation(awaiting), status=status.HTTP_201_CREATED
                            )
                        )
                    ),
                )
                return answers[0]
            try:
                register_device(
                    registration,
                    actor=request.user,
                    address=client_address(request),
                    # The answer is made (and kept for the Idempotency-Key) in the registration's
                    # own transaction: a retry after a crash finds both or neither.
                    on_recorded=lambda registration: answers.append(
                        claim.keep(_accepted_or_created(registration))
                    ),
                )
            except TaskQueueUnavailable:
                claim.withdraw()  # the registration was undone after its commit, so is its answer
                raise
            return answers[0]

        return idempotency.run_once(request, register)

    @extend_schema(
        summary="Revoke a device",
        parameters=[DEVICE_ID],
        request=RevokeRequestSerializer,
        responses={200: DeviceSerializer, **error_responses(*JSON_BODY, 404, 409, *EVERY_CALL)},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        device = self.get_object()
        payload = RevokeRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        reason = RevocationReason.parse(payload.validated_data.get("reason"))
        revoked = revoke_device(device, reason, actor=request.user, address=client_address(request))
        return Response(device_representation(revoked))

    @extend_schema(
        summary="Re-issue a device's certificate (rotation)",
        parameters=[DEVICE_ID],
        request=ReissueRequestSerializer,
        responses={201: RegistrationSerializer, **error_responses(*JSON_BODY, 404, 409, *EVERY_CALL)},
    )
    @action(detail=True, methods=["post"])
    def reissue(self, request: Request, pk: str) -> Response:
        device = self.get_object()
        payload = ReissueRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        key_type = payload.validated_data.get("key_type")
        registration = reissue_device(
            device,
            key_type=KeyType(key_type) if key_type else None,
            csr_pem=payload.validated_data.get("csr"),
            actor=request.user,
            address=client_address(request),
        )
        return Response(registration_representation(registration), status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="A fresh credential bundle and link",
        parameters=[DEVICE_ID],
        description="For a server-generated key this rotates the key (the server keeps no copy); "
        "for a device that made its own key, the current certificate is packaged again. "
        "Earlier unused links of the device stop working.",
        request=None,
        responses={201: BundleSerializer, **error_responses(404, 409, *EVERY_CALL)},
    )
    @action(detail=True, methods=["post"])
    def bundle(self, request: Request, pk: str) -> Response:
        bundle = issue_new_bundle(self.get_object(), actor=request.user, address=client_address(request))
        return Response(BundleSerializer(bundle).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Let a device renew now (EST simplereenroll)",
        parameters=[DEVICE_ID],
        description="The device may renew its certificate before its renewal window opens "
        "(RENEWAL_WINDOW_PERCENT), for example after a CA change; its next renewal clears the request.",
        request=None,
        responses={200: DeviceSerializer, **error_responses(404, 409, *EVERY_CALL)},
    )
    @action(detail=True, methods=["post"], url_path="request-renewal")
    def request_renewal(self, request: Request, pk: str) -> Response:
        device = request_renewal(self.get_object(), actor=request.user, address=client_address(request))
        return Response(device_representation(device))

    @extend_schema(
        summary="Provision a failed device again",
        parameters=[DEVICE_ID, FOLLOW_AT],
        description="For a device whose provisioning failed (see its failure_reason): a new bundle "
        "password and link, and a new attempt. The earlier link stays void.",
        request=None,
        responses={202: RegistrationSerializer, **error_responses(404, 409, *EVERY_CALL)},
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        registration = retry_provisioning(
            self.get_object(), actor=request.user, address=client_address(request)
        )
        return _accepted_or_created(registration)

    @extend_schema(
        summary="Delete a device (a valid certificate is revoked, not lost)",
        parameters=[DEVICE_ID],
        responses={204: None, **error_responses(404, *EVERY_CALL)},
    )
    def destroy(self, request: Request, pk: str) -> Response:
        delete_device(self.get_object(), actor=request.user, address=client_address(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
