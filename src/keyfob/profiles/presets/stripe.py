"""Stripe: secret key as bearer to api.stripe.com; webhook secret and account id kept beside it."""

from keyfob.profiles.registry import Field, Preset

PRESET = Preset(
    name="stripe",
    title="Stripe",
    fields=(
        Field("STRIPE_SECRET_KEY", "Secret key"),
        Field("STRIPE_WEBHOOK_SECRET", "Webhook signing secret", required=False),
        Field("STRIPE_ACCOUNT_ID", "Account id", secret=False, required=False),
    ),
    defaults=lambda _: {
        "base_url": "https://api.stripe.com",
        "hosts": ["api.stripe.com"],
        "inject": {"kind": "bearer", "key": "STRIPE_SECRET_KEY"},
    },
    docs_url="https://docs.stripe.com/keys",
)
