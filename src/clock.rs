//! Wall-clock time as the outputs, the cache and Redis record it: seconds since the UNIX epoch
//! (0 on a clock set before 1970). Elapsed times use `std::time::Instant`, never this.

/// Seconds since the UNIX epoch, with their fraction.
pub fn unix_seconds() -> f64 {
    since_epoch().as_secs_f64()
}

/// Whole seconds since the UNIX epoch.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Nanoseconds since the UNIX epoch (wrapping after the year 2554).
pub fn unix_nanos() -> u64 {
    since_epoch().as_nanos() as u64
}

fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
