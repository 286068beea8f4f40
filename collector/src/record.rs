//! The WAL record payload: the request's Arrow batches, so replay needs no OTLP decode.
//!
//! `[count u16] { [signal u8][tenant_len u8][tenant][ipc_len u32][Arrow IPC stream] }*`

use std::io::Cursor;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use tracelight_model::{Signal, SignalBatch, Tenant};

use crate::error::WalError;

pub fn encode(batches: &[SignalBatch]) -> Result<Vec<u8>, WalError> {
    let mut out = Vec::with_capacity(batches.iter().map(|b| b.batch.get_array_memory_size() / 2 + 64).sum());
    out.extend_from_slice(&(batches.len() as u16).to_le_bytes());
    for b in batches {
        out.push(b.signal.code());
        let t = b.tenant.as_str().as_bytes();
        out.push(t.len() as u8);
        out.extend_from_slice(t);
        let len_at = out.len();
        out.extend_from_slice(&[0u8; 4]);
        let mut w = StreamWriter::try_new(&mut out, &b.batch.schema()).map_err(|e| WalError::Encode(e.to_string()))?;
        w.write(&b.batch).map_err(|e| WalError::Encode(e.to_string()))?;
        w.finish().map_err(|e| WalError::Encode(e.to_string()))?;
        drop(w);
        let ipc_len = (out.len() - len_at - 4) as u32;
        out[len_at..len_at + 4].copy_from_slice(&ipc_len.to_le_bytes());
    }
    Ok(out)
}

pub fn decode(mut buf: &[u8]) -> Result<Vec<SignalBatch>, String> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if buf.len() < n {
            return Err("record truncated".into());
        }
        let (head, tail) = buf.split_at(n);
        *buf = tail;
        Ok(head)
    }
    let count = u16::from_le_bytes(take(&mut buf, 2)?.try_into().unwrap());
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let code = take(&mut buf, 1)?[0];
        let signal = Signal::from_code(code).ok_or_else(|| format!("unknown signal code {code}"))?;
        let tlen = take(&mut buf, 1)?[0] as usize;
        let tenant = std::str::from_utf8(take(&mut buf, tlen)?).map_err(|e| e.to_string())?;
        let tenant = Tenant::new(tenant).map_err(|e| e.to_string())?;
        let ipc_len = u32::from_le_bytes(take(&mut buf, 4)?.try_into().unwrap()) as usize;
        let ipc = take(&mut buf, ipc_len)?;
        let reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(|e| e.to_string())?;
        for batch in reader {
            let batch = batch.map_err(|e| e.to_string())?;
            if batch.schema().fields() != signal.schema().fields() {
                return Err(format!("{signal} batch has an unexpected schema"));
            }
            out.push(SignalBatch { tenant: tenant.clone(), signal, batch });
        }
    }
    if !buf.is_empty() {
        return Err(format!("{} trailing bytes", buf.len()));
    }
    Ok(out)
}
