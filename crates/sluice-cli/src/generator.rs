//! A synthetic healthcare event source: doctors, locations, availability, appointments and
//! insurance plans, as partial updates with explicit nulls, out-of-order and duplicate
//! deliveries. Deterministic for a seed.

use serde_json::{Map, Value, json};
use std::collections::VecDeque;

pub const COLLECTIONS: &[&str] = &[
    "doctor",
    "location",
    "availability",
    "appointment",
    "insurance_plan",
];

const FIRST: &[&str] = &[
    "Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo",
];
const LAST: &[&str] = &[
    "Smith", "Okafor", "Nguyen", "Garcia", "Kowalski", "Haddad", "Ito", "Berg",
];
const SPECIALTIES: &[&str] = &[
    "cardiology",
    "oncology",
    "pediatrics",
    "neurology",
    "radiology",
    "surgery",
];
const SITES: &[&str] = &[
    "Chicago Hope",
    "St Mary",
    "General",
    "Mercy",
    "University",
    "Children's",
];
const LANGUAGES: &[&str] = &["English", "Spanish", "Mandarin", "Polish", "Arabic"];
const CITIES: &[&str] = &[
    "Chicago", "Boston", "Lagos", "Hanoi", "Madrid", "Warsaw", "Osaka", "Oslo",
];
const PLANS: &[&str] = &["Basic", "Silver", "Gold", "Platinum"];
/// Events held back and released later, to deliver some out of order.
const REORDER_WINDOW: usize = 16;

/// xorshift64*: tiny, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

pub struct Generator {
    rng: Rng,
    doctors: u64,
    versions: Vec<u64>,
    clock_s: i64,
    held: VecDeque<(&'static str, Value)>,
    recent: VecDeque<(&'static str, Value)>,
}

impl Generator {
    /// Insurance plans exist under these ids (`plan_id`), which doctors name in
    /// `plan_ids`.
    const PLAN_IDS: u64 = PLANS.len() as u64 * 3;

    /// `doctors` sets the scale: locations, slots and plans are derived from it.
    pub fn new(seed: u64, doctors: u64) -> Self {
        Self {
            rng: Rng::new(seed),
            doctors: doctors.max(1),
            versions: vec![0; COLLECTIONS.len()],
            clock_s: 1_795_000_000,
            held: VecDeque::new(),
            recent: VecDeque::new(),
        }
    }

    /// The next event of any collection: `(collection, event)`.
    pub fn next_event(&mut self) -> (&'static str, Value) {
        // 3 % duplicates of a recent delivery, 5 % reordered through a small window.
        if self.rng.chance(3)
            && let Some(recent) = self
                .recent
                .get(self.rng.below(self.recent.len() as u64) as usize)
        {
            return recent.clone();
        }
        let fresh = self.fresh();
        let event = if self.rng.chance(5) {
            // Hold this one back; release the oldest held event once the window is full.
            self.held.push_back(fresh);
            match self.held.len() > REORDER_WINDOW {
                true => self.held.pop_front(),
                false => None,
            }
            .unwrap_or_else(|| self.fresh())
        } else if self.rng.chance(10)
            && let Some(held) = self.held.pop_front()
        {
            // A held event arrives late, after newer ones.
            self.held.push_back(fresh);
            held
        } else {
            fresh
        };
        self.recent.push_back(event.clone());
        if self.recent.len() > 64 {
            self.recent.pop_front();
        }
        event
    }

    /// One complete document per doctor and location, at version 0, so that a demo has
    /// every key from the start and later partial updates have something to merge into.
    pub fn seed_events(&mut self) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        for id in 0..self.doctors {
            let name = format!("{} {}", self.rng.pick(FIRST), self.rng.pick(LAST));
            let doctor = json!({"doctor_id": id, "updated_at": 0, "name": name,
                "specialty": self.rng.pick(SPECIALTIES), "location_id": self.rng.below(self.locations()),
                "accepting_patients": true, "rating": 4.0, "plan_ids": [self.rng.below(Self::PLAN_IDS)]});
            events.push(("doctor", doctor));
        }
        for id in 0..self.locations() {
            let site = self.rng.pick(SITES);
            let city = self.rng.pick(CITIES);
            let location = json!({"location_id": id, "updated_at": 0, "name": format!("{site} {city}"),
                "city": city, "address": {"street": "1 Main St", "zip": "60601"}});
            events.push(("location", location));
        }
        events
    }

    /// The next event of one collection.
    pub fn next_of(&mut self, collection: &str) -> Value {
        loop {
            let (name, event) = self.next_event();
            if name == collection {
                return event;
            }
        }
    }

    fn fresh(&mut self) -> (&'static str, Value) {
        self.clock_s += 1;
        let roll = self.rng.below(100);
        let index = match roll {
            0..40 => 0,
            40..50 => 1,
            50..80 => 2,
            80..95 => 3,
            _ => 4,
        };
        self.versions[index] += 1;
        let version = self.versions[index];
        let event = match index {
            0 => self.doctor(version),
            1 => self.location(version),
            2 => self.availability(version),
            3 => self.appointment(),
            _ => self.plan(),
        };
        (COLLECTIONS[index], event)
    }

    fn maybe_null(&mut self, value: Value) -> Value {
        if self.rng.chance(6) {
            Value::Null
        } else {
            value
        }
    }

    fn doctor(&mut self, version: u64) -> Value {
        let id = self.rng.below(self.doctors);
        let mut event = Map::new();
        event.insert("doctor_id".into(), json!(id));
        event.insert("updated_at".into(), json!(version));
        let fields = 1 + self.rng.below(3);
        for _ in 0..fields {
            let (name, value) = match self.rng.below(10) {
                0 => (
                    "name",
                    json!(format!("{} {}", self.rng.pick(FIRST), self.rng.pick(LAST))),
                ),
                1 => ("specialty", json!(self.rng.pick(SPECIALTIES))),
                2 => ("location_id", json!(self.rng.below(self.locations()))),
                3 => ("accepting_patients", json!(self.rng.chance(70))),
                4 => ("rating", json!((10 + self.rng.below(41)) as f64 / 10.0)),
                7 => {
                    let languages: Vec<&str> = LANGUAGES
                        .iter()
                        .copied()
                        .filter(|_| self.rng.chance(35))
                        .collect();
                    ("languages", json!(languages))
                }
                // Around lower Manhattan, within about 15 km.
                8 => (
                    "geo",
                    json!({"lat": 40.60 + self.rng.below(2_500) as f64 / 10_000.0,
                           "lon": -74.10 + self.rng.below(2_500) as f64 / 10_000.0}),
                ),
                9 => (
                    "next_slot",
                    json!(format!(
                        "2026-12-{:02}T{:02}:00:00Z",
                        1 + self.rng.below(28),
                        8 + self.rng.below(10)
                    )),
                ),
                5 => (
                    "contact",
                    json!({"phone": format!("+1-312-555-{:04}", self.rng.below(10_000))}),
                ),
                _ => (
                    "plan_ids",
                    json!([
                        self.rng.below(Self::PLAN_IDS),
                        self.rng.below(Self::PLAN_IDS)
                    ]),
                ),
            };
            let value = self.maybe_null(value);
            event.insert(name.into(), value);
        }
        Value::Object(event)
    }

    fn locations(&self) -> u64 {
        (self.doctors / 10).max(1)
    }

    fn location(&mut self, version: u64) -> Value {
        let id = self.rng.below(self.locations());
        let site = self.rng.pick(SITES);
        let city = self.rng.pick(CITIES);
        let zip = json!(format!("{:05}", self.rng.below(99_999)));
        let zip = self.maybe_null(zip);
        json!({"location_id": id, "updated_at": version, "name": format!("{site} {city}"), "city": city,
               "address": {"street": format!("{} Main St", 1 + self.rng.below(999)), "zip": zip}})
    }

    fn availability(&mut self, version: u64) -> Value {
        let doctor = self.rng.below(self.doctors);
        let hour = 8 + self.rng.below(10);
        let day = 1 + self.rng.below(28);
        json!({"doctor_id": doctor, "slot": format!("2026-12-{day:02}T{hour:02}:00"), "updated_at": version,
               "open": self.rng.chance(60)})
    }

    fn appointment(&mut self) -> Value {
        let id = self.rng.below(self.doctors * 5);
        let status = ["booked", "confirmed", "cancelled", "completed"][self.rng.below(4) as usize];
        let at = time_text(self.clock_s);
        json!({"appointment_id": format!("apt-{id}"), "updated_at": at, "status": status,
               "doctor_id": self.rng.below(self.doctors), "specialty": self.rng.pick(SPECIALTIES)})
    }

    fn plan(&mut self) -> Value {
        let id = self.rng.below(Self::PLAN_IDS);
        json!({"plan_id": id, "name": self.rng.pick(PLANS), "monthly_usd": 50 + self.rng.below(400)})
    }
}

/// RFC 3339 in UTC for a Unix time in seconds, without a time crate.
fn time_text(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let seconds = unix_s.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_text_matches_known_dates() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00Z");
        assert_eq!(time_text(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(time_text(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn deterministic_and_covers_every_collection() {
        let mut a = Generator::new(7, 100);
        let mut b = Generator::new(7, 100);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let (collection, event) = a.next_event();
            assert_eq!((collection, event.clone()), b.next_event());
            seen.insert(collection);
        }
        assert_eq!(seen.len(), COLLECTIONS.len());
    }
}
