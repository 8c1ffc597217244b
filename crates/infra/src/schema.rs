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
        created_at -> Int8,
        expires_at -> Nullable<Int8>,
        revoked_at -> Nullable<Int8>,
        last_used_at -> Nullable<Int8>,
    }
}

diesel::table! {
    cache_events (id) {
        id -> Int4,
        key_hash -> Nullable<Text>,
        org_id -> Nullable<Text>,
        created_at -> Int8,
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
        created_at -> Int8,
    }
}

diesel::table! {
    plans (id) {
        id -> Text,
        name -> Text,
        base_price_cents -> Int8,
    }
}

diesel::joinable!(api_keys -> organizations (org_id));
diesel::joinable!(organizations -> plans (plan_id));

diesel::allow_tables_to_appear_in_same_query!(api_keys, cache_events, organizations, plans,);
