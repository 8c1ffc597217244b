// @generated automatically by Diesel CLI.

diesel::table! {
    api_keys (id) {
        id -> Text,
        org_id -> Text,
        name -> Text,
        key_hash -> Text,
        key_prefix -> Text,
        environment -> Text,
        scopes -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        last_used_at -> Nullable<BigInt>,
        allowed_ips -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        org_id -> Text,
        action -> Text,
        target_id -> Nullable<Text>,
        actor_key_id -> Nullable<Text>,
        client_ip -> Nullable<Text>,
        user_agent -> Nullable<Text>,
        created_at -> BigInt,
        details -> Nullable<Text>,
    }
}

diesel::table! {
    cache_events (id) {
        id -> BigInt,
        key_hash -> Nullable<Text>,
        org_id -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::table! {
    key_expiry_notices (key_id, notice) {
        key_id -> Text,
        notice -> Text,
        sent_at -> BigInt,
    }
}

diesel::table! {
    key_usage (key_id, day, outcome) {
        key_id -> Text,
        day -> Text,
        outcome -> Text,
        uses -> BigInt,
    }
}

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        email -> Text,
        email_normalized -> Text,
        plan_id -> Text,
        is_active -> Bool,
        created_at -> BigInt,
        closed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    plan_periods (org_id, start_day) {
        org_id -> Text,
        start_day -> Text,
        plan_id -> Text,
    }
}

diesel::table! {
    plans (id) {
        id -> Text,
        name -> Text,
        base_price_cents -> BigInt,
        included_requests_per_month -> BigInt,
        over_limit -> Text,
    }
}

diesel::table! {
    usage_threshold_notices (org_id, period_start, percent) {
        org_id -> Text,
        period_start -> Text,
        percent -> Integer,
        sent_at -> BigInt,
    }
}

diesel::table! {
    usage_writers (writer) {
        writer -> Text,
        sequence -> BigInt,
        written_at -> BigInt,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> BigInt,
        delivery_id -> BigInt,
        endpoint_id -> Text,
        attempt -> Integer,
        attempted_at -> BigInt,
        status_code -> Nullable<Integer>,
        error -> Nullable<Text>,
        duration_ms -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        endpoint_id -> Text,
        org_id -> Text,
        message_id -> Text,
        event_type -> Text,
        body -> Text,
        created_at -> BigInt,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        claimed_until -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        org_id -> Text,
        url -> Text,
        description -> Nullable<Text>,
        events -> Text,
        enabled -> Bool,
        disabled_reason -> Nullable<Text>,
        secret_sealed -> Text,
        previous_secret_sealed -> Nullable<Text>,
        previous_secret_until -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::joinable!(api_keys -> organizations (org_id));
diesel::joinable!(key_expiry_notices -> api_keys (key_id));
diesel::joinable!(key_usage -> api_keys (key_id));
diesel::joinable!(organizations -> plans (plan_id));
diesel::joinable!(plan_periods -> organizations (org_id));
diesel::joinable!(plan_periods -> plans (plan_id));
diesel::joinable!(usage_threshold_notices -> organizations (org_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::joinable!(webhook_attempts -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_endpoints -> organizations (org_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_keys,
    audit_events,
    cache_events,
    key_expiry_notices,
    key_usage,
    organizations,
    plan_periods,
    plans,
    usage_threshold_notices,
    usage_writers,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
);
