//! One conformance suite for every store: each test here is written once against the store
//! traits and runs on SQLite and on PostgreSQL (`sqlite/tests.rs` and `postgres/tests.rs`
//! each call [`for_each_conformance_test!`] with their own harness). A new store concern adds
//! its tests here, once, and both backends run them.

mod access;
mod attachments;
mod config;
mod devices;
mod pipes;
mod plugins;
mod queue;
mod sources;

pub use self::access::*;
pub use self::attachments::*;
pub use self::config::*;
pub use self::devices::*;
pub use self::pipes::*;
pub use self::plugins::*;
pub use self::queue::*;
pub use self::sources::*;

/// Calls `$harness!(name)` for every conformance test, so that each backend defines one
/// test per name without listing them again.
macro_rules! for_each_conformance_test {
    ($harness:ident) => {
        $harness!(
            fan_out_claim_and_outcomes,
            a_message_for_one_endpoint_goes_there_alone,
            new_deliveries_are_handed_off_when_the_dispatcher_takes_them,
            transformations_are_kept_and_cancel_deliveries,
            an_endpoint_failing_too_long_is_disabled,
            purges_history_but_keeps_pending_work,
            claims_skip_full_endpoints,
            messages_need_a_live_application,
            counts_due_and_scheduled_deliveries,
            endpoint_changes_move_the_epoch_before_they_are_acknowledged,
            a_stale_endpoint_write_cannot_undo_auto_disable,
            a_rotation_racing_a_header_change_is_kept,
            racing_rotations_keep_the_newest_current_and_the_one_before_verifying,
            concurrent_rotations_chain_their_secrets,
            racing_application_changes_both_survive,
            disabling_a_gone_endpoint_is_one_change,
            purges_expired_responses_and_tokens,
            app_tokens_carry_capabilities_and_expire_all,
            remembered_responses_go_with_their_application,
            consumers_per_endpoint_are_bounded,
            sources_are_kept_with_their_secrets,
            received_requests_are_logged_with_their_message,
            cron_ticks_only_move_forward,
            deliver_at_holds_deliveries_until_their_time,
            pipes_are_configuration_with_a_log_of_runs,
            timers_fire_once_and_a_wait_restarts_or_is_kept,
            attachments_travel_with_messages_and_go_with_the_last,
            an_endpoint_keeps_its_media_settings,
            mqtt_routes_are_kept_until_deleted,
            devices_go_online_and_offline_once_per_change,
            commands_wait_then_finish_once,
            devices_and_commands_go_with_their_application,
            plugins_are_installed_and_tokens_live_with_their_installation,
            the_audit_log_lists_newest_first_and_is_purged_with_history,
            waiting_for_the_ownership_check_uses_no_attempt,
            erasing_content_keeps_records_and_cancels_pending_work,
            a_resend_while_sending_follows_the_attempt_in_flight,
            a_portal_token_ends_alone
        );
    };
}
pub(crate) use for_each_conformance_test;

use std::collections::BTreeSet;

use kait_core::signing::Secret;
use kait_core::time::now_millis;
use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryStatus, Endpoint, EndpointId, Message,
    MessageId, TriggerType,
};

use crate::{ClaimedDelivery, NewMessage, NextStep, Outcome};

pub fn application() -> Application {
    Application {
        id: AppId::generate(),
        uid: None,
        name: "test".into(),
        rate_limit: None,
        metadata: Default::default(),
        created_at: 0,
        updated_at: 0,
        revision: 0,
    }
}

pub fn endpoint(app_id: &AppId, event_types: Option<&[&str]>) -> Endpoint {
    Endpoint {
        id: EndpointId::generate(),
        app_id: app_id.clone(),
        uid: None,
        url: "http://127.0.0.1:9/hook".into(),
        description: String::new(),
        version: 1,
        disabled: false,
        event_types: event_types.map(|names| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<BTreeSet<_>>()
        }),
        channels: None,
        rate_limit: None,
        metadata: Default::default(),
        secret: Secret::generate(),
        previous_secret: None,
        headers: Default::default(),
        ordering: Default::default(),
        format: Default::default(),
        kind: Default::default(),
        created_at: 0,
        updated_at: 0,
        revision: 0,
        transformation: Default::default(),
        media: Default::default(),
        ownership: Default::default(),
    }
}

pub fn message(app_id: &AppId, event_type: &str, event_id: Option<&str>) -> NewMessage {
    NewMessage {
        message: Message {
            id: MessageId::generate(),
            app_id: app_id.clone(),
            event_type: event_type.into(),
            event_id: event_id.map(str::to_owned),
            channels: None,
            ordering_key: None,
            payload: "{}".into(),
            raw: None,
            created_at: now_millis(),
            attachments: Vec::new(),
            deliver_at: None,
        },
        idempotency_key: None,
        received: None,
        only_endpoint: None,
    }
}

pub fn outcome(delivery_id: i64, claimed: &ClaimedDelivery, next: NextStep) -> Outcome {
    Outcome {
        delivery_id,
        attempt: Attempt {
            id: AttemptId::generate(),
            msg_id: claimed.msg_id.clone(),
            endpoint_id: claimed.endpoint_id.clone(),
            app_id: claimed.app_id.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            status: if next == NextStep::Succeeded {
                DeliveryStatus::Success
            } else {
                DeliveryStatus::Fail
            },
            response_status_code: 500,
            response: String::new(),
            response_duration_ms: 1,
            trigger_type: TriggerType::Scheduled,
            created_at: now_millis(),
            sent: None,
        },
        next,
        reached_endpoint: true,
    }
}
