//! Devices: reading them (with the pending operation, for authentication) and their policy.

use capf_model::device::DeviceName;

use super::adapter::{in_tx, query, Durability, Pool};
use super::audit::{write_event, Ev};
use super::lifecycle::{pending_query, still_pending};
use super::rows::{device_from_row, operation_from_row, DEVICE_SELECT};
use crate::error::{Missing, Result};
use crate::records::{Device, Operation, Timestamp};

pub(super) async fn device(pool: &Pool, name: &DeviceName) -> Result<Option<Device>> {
    let sql = format!("{DEVICE_SELECT} WHERE name = $1");
    pool.fetch_optional(query(sql).text(name.as_str()))
        .await?
        .as_ref()
        .map(device_from_row)
        .transpose()
}

pub(super) async fn device_and_pending_operation(
    pool: &Pool,
    name: &DeviceName,
    now: Timestamp,
) -> Result<Option<(Device, Option<Operation>)>> {
    let device_query = query(format!("{DEVICE_SELECT} WHERE name = $1")).text(name.as_str());
    let (devices, pending) = pool.fetch_pair(device_query, pending_query(name)).await?;
    let Some(device) = devices.first() else {
        return Ok(None);
    };
    let device = device_from_row(device)?;
    let op = match pending.first() {
        Some(row) => still_pending(pool, operation_from_row(row)?, now).await?,
        None => None,
    };
    Ok(Some((device, op)))
}

pub(super) async fn set_require_sudi(
    pool: &Pool,
    name: &DeviceName,
    require: bool,
    now: Timestamp,
) -> Result<()> {
    in_tx!(pool, Durability::Full, [name], |tx| {
        let updated = tx
            .fetch_optional(
                query(
                    "UPDATE devices SET require_sudi = $2, updated_at = $3 \
                     WHERE name = $1 RETURNING id",
                )
                .text(name.as_str())
                .bool(require)
                .time(now),
            )
            .await?;
        if updated.is_none() {
            return Err(Missing::Device(name.clone()).into());
        }
        let detail = format!("require_sudi={require}");
        let ev = Ev::new(name.as_str(), None, "device_updated", detail);
        write_event(tx, now, ev).await
    })
}
