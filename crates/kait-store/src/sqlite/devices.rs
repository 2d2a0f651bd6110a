//! Device routes, the device registry and commands on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, DeviceCommandId, MqttRouteId};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::{
    CommandStatus, Device, DeviceCommand, DeviceRegistry, DeviceSeen, Devices, MqttRoute,
    StoreError, StoreResult,
};

fn route_row(row: &Row<'_>) -> rusqlite::Result<MqttRoute> {
    let text: String = row.get(1)?;
    Ok(MqttRoute {
        id: MqttRouteId::from_trusted(row.get(0)?),
        spec: serde_json::from_str(&text).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, error.into())
        })?,
        created_at: row.get(2)?,
    })
}

#[async_trait]
impl Devices for SqliteStore {
    async fn create_mqtt_route(&self, route: MqttRoute) -> StoreResult<MqttRoute> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO mqtt_route (id, spec, created_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        route.id.as_str(),
                        route.spec.to_string(),
                        route.created_at
                    ])?;
                Ok(route)
            })
            .await
    }

    async fn list_mqtt_routes(&self) -> StoreResult<Vec<MqttRoute>> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached("SELECT id, spec, created_at FROM mqtt_route ORDER BY id")?
                .query_map([], route_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<Option<MqttRoute>> {
        let id = id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached("SELECT id, spec, created_at FROM mqtt_route WHERE id = ?1")?
                .query_row([id.as_str()], route_row)
                .optional()?)
        })
        .await
    }

    async fn delete_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let deleted = context
                    .connection
                    .prepare_cached("DELETE FROM mqtt_route WHERE id = ?1")?
                    .execute([id.as_str()])?;
                if deleted == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }
}

const DEVICE_COLUMNS: &str = "app_id, device, online, last_seen_at, silent_at, changed_at";
const COMMAND_COLUMNS: &str = "id, app_id, device, name, payload, asynchronous, status, \
     timeout_ms, created_at, deadline_at, reply, finished_at";

fn device_row(row: &Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        app_id: AppId::from_trusted(row.get(0)?),
        device: row.get(1)?,
        online: row.get(2)?,
        last_seen_at: row.get(3)?,
        silent_at: row.get(4)?,
        changed_at: row.get(5)?,
    })
}

fn command_row(row: &Row<'_>) -> rusqlite::Result<DeviceCommand> {
    let status: String = row.get(6)?;
    Ok(DeviceCommand {
        id: DeviceCommandId::from_trusted(row.get(0)?),
        app_id: AppId::from_trusted(row.get(1)?),
        device: row.get(2)?,
        name: row.get(3)?,
        payload: row.get(4)?,
        asynchronous: row.get(5)?,
        status: CommandStatus::parse(&status).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                6,
                rusqlite::types::Type::Text,
                format!("command status `{status}`").into(),
            )
        })?,
        timeout_ms: row.get::<_, i64>(7)? as u64,
        created_at: row.get(8)?,
        deadline_at: row.get(9)?,
        reply: row.get(10)?,
        finished_at: row.get(11)?,
    })
}

#[async_trait]
impl DeviceRegistry for SqliteStore {
    async fn touch_devices(&self, seen: &[DeviceSeen]) -> StoreResult<Vec<usize>> {
        let seen = seen.to_vec();
        self.writer
            .write(move |context| {
                let mut statement = context.connection.prepare_cached(
                    "UPDATE device SET last_seen_at = MAX(last_seen_at, ?3), silent_at = ?4 \
                     WHERE app_id = ?1 AND device = ?2 AND online = 1",
                )?;
                let mut untouched = Vec::new();
                for (index, one) in seen.iter().enumerate() {
                    let touched = statement.execute(params![
                        one.app_id.as_str(),
                        one.device,
                        one.at,
                        one.silent_at
                    ])?;
                    if touched == 0 {
                        untouched.push(index);
                    }
                }
                Ok(untouched)
            })
            .await
    }

    async fn device_online(&self, seen: &DeviceSeen) -> StoreResult<bool> {
        let seen = seen.clone();
        self.writer
            .write(move |context| {
                let was_online: Option<bool> = context
                    .connection
                    .prepare_cached("SELECT online FROM device WHERE app_id = ?1 AND device = ?2")?
                    .query_row(params![seen.app_id.as_str(), seen.device], |row| row.get(0))
                    .optional()?;
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO device (app_id, device, online, last_seen_at, silent_at, changed_at) \
                         VALUES (?1, ?2, 1, ?3, ?4, ?3) \
                         ON CONFLICT (app_id, device) DO UPDATE SET \
                           online = 1, last_seen_at = MAX(last_seen_at, excluded.last_seen_at), \
                           silent_at = excluded.silent_at, \
                           changed_at = CASE WHEN online = 1 THEN changed_at ELSE excluded.changed_at END",
                    )?
                    .execute(params![
                        seen.app_id.as_str(),
                        seen.device,
                        seen.at,
                        seen.silent_at
                    ])?;
                Ok(was_online != Some(true))
            })
            .await
    }

    async fn device_offline(
        &self,
        app_id: &AppId,
        device: &str,
        if_silent_at: Option<Millis>,
        at: Millis,
    ) -> StoreResult<bool> {
        let (app_id, device) = (app_id.clone(), device.to_owned());
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE device SET online = 0, silent_at = NULL, changed_at = ?3 \
                         WHERE app_id = ?1 AND device = ?2 AND online = 1 \
                           AND (?4 IS NULL OR silent_at = ?4)",
                    )?
                    .execute(params![app_id.as_str(), device, at, if_silent_at])?;
                Ok(changed > 0)
            })
            .await
    }

    async fn get_device(&self, app_id: &AppId, device: &str) -> StoreResult<Option<Device>> {
        let (app_id, device) = (app_id.clone(), device.to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM device WHERE app_id = ?1 AND device = ?2"
                ))?
                .query_row(params![app_id.as_str(), device], device_row)
                .optional()?)
        })
        .await
    }

    async fn list_devices(
        &self,
        app_id: &AppId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Device>> {
        let (app_id, after) = (app_id.clone(), after.map(str::to_owned));
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM device WHERE app_id = ?1 \
                     AND (?2 IS NULL OR device > ?2) ORDER BY device LIMIT ?3"
                ))?
                .query_map(params![app_id.as_str(), after, limit as i64], device_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn silent_devices(&self, now: Millis, limit: usize) -> StoreResult<Vec<Device>> {
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {DEVICE_COLUMNS} FROM device \
                     WHERE online = 1 AND silent_at <= ?1 ORDER BY silent_at LIMIT ?2"
                ))?
                .query_map(params![now, limit as i64], device_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_device_command(&self, command: DeviceCommand) -> StoreResult<DeviceCommand> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO device_command ({COMMAND_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                    ))?
                    .execute(params![
                        command.id.as_str(),
                        command.app_id.as_str(),
                        command.device,
                        command.name,
                        command.payload,
                        command.asynchronous,
                        command.status.as_str(),
                        command.timeout_ms as i64,
                        command.created_at,
                        command.deadline_at,
                        command.reply,
                        command.finished_at,
                    ])?;
                Ok(command)
            })
            .await
    }

    async fn get_device_command(&self, id: &DeviceCommandId) -> StoreResult<Option<DeviceCommand>> {
        let id = id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM device_command WHERE id = ?1"
                ))?
                .query_row([id.as_str()], command_row)
                .optional()?)
        })
        .await
    }

    async fn finish_device_command(
        &self,
        id: &DeviceCommandId,
        status: CommandStatus,
        reply: Option<Vec<u8>>,
        at: Millis,
    ) -> StoreResult<Option<DeviceCommand>> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                Ok(context
                    .connection
                    .prepare_cached(&format!(
                        "UPDATE device_command SET status = ?2, reply = ?3, finished_at = ?4 \
                         WHERE id = ?1 AND status IN ('queued', 'sent') RETURNING {COMMAND_COLUMNS}"
                    ))?
                    .query_row(
                        params![id.as_str(), status.as_str(), reply, at],
                        command_row,
                    )
                    .optional()?)
            })
            .await
    }

    async fn send_queued_commands(
        &self,
        app_id: &AppId,
        device: &str,
        now: Millis,
    ) -> StoreResult<Vec<DeviceCommand>> {
        let (app_id, device) = (app_id.clone(), device.to_owned());
        self.writer
            .write(move |context| {
                let mut sent = context
                    .connection
                    .prepare_cached(&format!(
                        "UPDATE device_command SET status = 'sent', deadline_at = ?3 + timeout_ms \
                         WHERE app_id = ?1 AND device = ?2 AND status = 'queued' AND deadline_at > ?3 \
                         RETURNING {COMMAND_COLUMNS}"
                    ))?
                    .query_map(params![app_id.as_str(), device, now], command_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                sent.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
                Ok(sent)
            })
            .await
    }

    async fn due_device_commands(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<DeviceCommand>> {
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {COMMAND_COLUMNS} FROM device_command \
                     WHERE status IN ('queued', 'sent') AND deadline_at <= ?1 \
                     ORDER BY deadline_at LIMIT ?2"
                ))?
                .query_map(params![now, limit as i64], command_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn next_device_deadline(&self) -> StoreResult<Option<Millis>> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT MIN(at) FROM ( \
                       SELECT MIN(silent_at) AS at FROM device WHERE online = 1 \
                       UNION ALL \
                       SELECT MIN(deadline_at) FROM device_command WHERE status IN ('queued', 'sent'))",
                )?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }
}
