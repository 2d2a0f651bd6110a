//! Device routes, the device registry and commands on PostgreSQL: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, DeviceCommandId, MqttRouteId};
use tokio_postgres::Row;

use super::{PgStore, rows};
use crate::{
    CommandStatus, Device, DeviceCommand, DeviceRegistry, DeviceSeen, Devices, MqttRoute,
    StoreError, StoreResult,
};

fn route_row(row: &Row) -> StoreResult<MqttRoute> {
    Ok(MqttRoute {
        id: MqttRouteId::from_trusted(row.try_get(0)?),
        spec: rows::from_json("spec", row.try_get(1)?)?,
        created_at: row.try_get(2)?,
    })
}

#[async_trait]
impl Devices for PgStore {
    async fn create_mqtt_route(&self, route: MqttRoute) -> StoreResult<MqttRoute> {
        self.client()
            .await?
            .execute(
                "INSERT INTO mqtt_route (id, spec, created_at) VALUES ($1, $2, $3)",
                &[
                    &route.id.as_str(),
                    &route.spec.to_string(),
                    &route.created_at,
                ],
            )
            .await?;
        Ok(route)
    }

    async fn list_mqtt_routes(&self) -> StoreResult<Vec<MqttRoute>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, spec, created_at FROM mqtt_route ORDER BY id",
                &[],
            )
            .await?;
        rows.iter().map(route_row).collect()
    }

    async fn get_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<Option<MqttRoute>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, spec, created_at FROM mqtt_route WHERE id = $1",
                &[&id.as_str()],
            )
            .await?;
        row.as_ref().map(route_row).transpose()
    }

    async fn delete_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<()> {
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM mqtt_route WHERE id = $1", &[&id.as_str()])
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

const DEVICE_COLUMNS: &str = "app_id, device, online, last_seen_at, silent_at, changed_at";
const COMMAND_COLUMNS: &str = "id, app_id, device, name, payload, asynchronous, status, \
     timeout_ms, created_at, deadline_at, reply, finished_at";

fn device_row(row: &Row) -> StoreResult<Device> {
    Ok(Device {
        app_id: AppId::from_trusted(row.try_get(0)?),
        device: row.try_get(1)?,
        online: row.try_get(2)?,
        last_seen_at: row.try_get(3)?,
        silent_at: row.try_get(4)?,
        changed_at: row.try_get(5)?,
    })
}

fn command_row(row: &Row) -> StoreResult<DeviceCommand> {
    let status: &str = row.try_get(6)?;
    Ok(DeviceCommand {
        id: DeviceCommandId::from_trusted(row.try_get(0)?),
        app_id: AppId::from_trusted(row.try_get(1)?),
        device: row.try_get(2)?,
        name: row.try_get(3)?,
        payload: row.try_get(4)?,
        asynchronous: row.try_get(5)?,
        status: CommandStatus::parse(status)
            .ok_or_else(|| StoreError::corrupt(format!("command status `{status}`")))?,
        timeout_ms: row.try_get::<_, i64>(7)? as u64,
        created_at: row.try_get(8)?,
        deadline_at: row.try_get(9)?,
        reply: row.try_get(10)?,
        finished_at: row.try_get(11)?,
    })
}

#[async_trait]
impl DeviceRegistry for PgStore {
    async fn touch_devices(&self, seen: &[DeviceSeen]) -> StoreResult<Vec<usize>> {
        if seen.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for the batch: the rows it touched come back by their index.
        let indexes: Vec<i32> = (0..seen.len() as i32).collect();
        let apps: Vec<&str> = seen.iter().map(|one| one.app_id.as_str()).collect();
        let devices: Vec<&str> = seen.iter().map(|one| one.device.as_str()).collect();
        let ats: Vec<i64> = seen.iter().map(|one| one.at).collect();
        let silent: Vec<Option<i64>> = seen.iter().map(|one| one.silent_at).collect();
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE device d SET last_seen_at = GREATEST(d.last_seen_at, s.at), \
                   silent_at = s.silent_at \
                 FROM (SELECT DISTINCT ON (app_id, device) * FROM \
                         unnest($1::int[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
                         AS u(index, app_id, device, at, silent_at) \
                       ORDER BY app_id, device, at DESC) s \
                 WHERE d.app_id = s.app_id AND d.device = s.device AND d.online \
                 RETURNING s.app_id, s.device",
                &[&indexes, &apps, &devices, &ats, &silent],
            )
            .await?;
        let touched: std::collections::HashSet<(String, String)> = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<StoreResult<_>>()?;
        Ok(seen
            .iter()
            .enumerate()
            .filter(|(_, one)| {
                !touched.contains(&(one.app_id.as_str().to_owned(), one.device.clone()))
            })
            .map(|(index, _)| index)
            .collect())
    }

    async fn device_online(&self, seen: &DeviceSeen) -> StoreResult<bool> {
        // `xmax = 0` on the returned row: it was inserted; `was_online` reads the row the
        // update replaced (the subquery sees the snapshot before this statement).
        let row = self
            .client()
            .await?
            .query_one(
                "WITH before AS (SELECT online FROM device WHERE app_id = $1 AND device = $2) \
                 INSERT INTO device (app_id, device, online, last_seen_at, silent_at, changed_at) \
                 VALUES ($1, $2, TRUE, $3, $4, $3) \
                 ON CONFLICT (app_id, device) DO UPDATE SET \
                   online = TRUE, last_seen_at = GREATEST(device.last_seen_at, EXCLUDED.last_seen_at), \
                   silent_at = EXCLUDED.silent_at, \
                   changed_at = CASE WHEN device.online THEN device.changed_at ELSE EXCLUDED.changed_at END \
                 RETURNING COALESCE((SELECT online FROM before), FALSE)",
                &[&seen.app_id.as_str(), &seen.device, &seen.at, &seen.silent_at],
            )
            .await?;
        let was_online: bool = row.try_get(0)?;
        Ok(!was_online)
    }

    async fn device_offline(
        &self,
        app_id: &AppId,
        device: &str,
        if_silent_at: Option<Millis>,
        at: Millis,
    ) -> StoreResult<bool> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE device SET online = FALSE, silent_at = NULL, changed_at = $3 \
                 WHERE app_id = $1 AND device = $2 AND online \
                   AND ($4::bigint IS NULL OR silent_at = $4)",
                &[&app_id.as_str(), &device, &at, &if_silent_at],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn get_device(&self, app_id: &AppId, device: &str) -> StoreResult<Option<Device>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {DEVICE_COLUMNS} FROM device WHERE app_id = $1 AND device = $2"),
                &[&app_id.as_str(), &device],
            )
            .await?;
        row.as_ref().map(device_row).transpose()
    }

    async fn list_devices(
        &self,
        app_id: &AppId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Device>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM device WHERE app_id = $1 \
                     AND ($2::text IS NULL OR device > $2) ORDER BY device LIMIT $3"
                ),
                &[&app_id.as_str(), &after, &(limit as i64)],
            )
            .await?;
        rows.iter().map(device_row).collect()
    }

    async fn silent_devices(&self, now: Millis, limit: usize) -> StoreResult<Vec<Device>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {DEVICE_COLUMNS} FROM device \
                     WHERE online AND silent_at <= $1 ORDER BY silent_at LIMIT $2"
                ),
                &[&now, &(limit as i64)],
            )
            .await?;
        rows.iter().map(device_row).collect()
    }

    async fn create_device_command(&self, command: DeviceCommand) -> StoreResult<DeviceCommand> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO device_command ({COMMAND_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                &[
                    &command.id.as_str(),
                    &command.app_id.as_str(),
                    &command.device,
                    &command.name,
                    &command.payload,
                    &command.asynchronous,
                    &command.status.as_str(),
                    &(command.timeout_ms as i64),
                    &command.created_at,
                    &command.deadline_at,
                    &command.reply,
                    &command.finished_at,
                ],
            )
            .await?;
        Ok(command)
    }

    async fn get_device_command(&self, id: &DeviceCommandId) -> StoreResult<Option<DeviceCommand>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {COMMAND_COLUMNS} FROM device_command WHERE id = $1"),
                &[&id.as_str()],
            )
            .await?;
        row.as_ref().map(command_row).transpose()
    }

    async fn finish_device_command(
        &self,
        id: &DeviceCommandId,
        status: CommandStatus,
        reply: Option<Vec<u8>>,
        at: Millis,
    ) -> StoreResult<Option<DeviceCommand>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "UPDATE device_command SET status = $2, reply = $3, finished_at = $4 \
                     WHERE id = $1 AND status IN ('queued', 'sent') RETURNING {COMMAND_COLUMNS}"
                ),
                &[&id.as_str(), &status.as_str(), &reply, &at],
            )
            .await?;
        row.as_ref().map(command_row).transpose()
    }

    async fn send_queued_commands(
        &self,
        app_id: &AppId,
        device: &str,
        now: Millis,
    ) -> StoreResult<Vec<DeviceCommand>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "UPDATE device_command SET status = 'sent', deadline_at = $3 + timeout_ms \
                     WHERE app_id = $1 AND device = $2 AND status = 'queued' AND deadline_at > $3 \
                     RETURNING {COMMAND_COLUMNS}"
                ),
                &[&app_id.as_str(), &device, &now],
            )
            .await?;
        let mut sent = rows
            .iter()
            .map(command_row)
            .collect::<StoreResult<Vec<_>>>()?;
        sent.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(sent)
    }

    async fn due_device_commands(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<DeviceCommand>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {COMMAND_COLUMNS} FROM device_command \
                     WHERE status IN ('queued', 'sent') AND deadline_at <= $1 \
                     ORDER BY deadline_at LIMIT $2"
                ),
                &[&now, &(limit as i64)],
            )
            .await?;
        rows.iter().map(command_row).collect()
    }

    async fn next_device_deadline(&self) -> StoreResult<Option<Millis>> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT LEAST( \
                   (SELECT MIN(silent_at) FROM device WHERE online), \
                   (SELECT MIN(deadline_at) FROM device_command WHERE status IN ('queued', 'sent')))",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }
}
