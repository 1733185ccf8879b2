// A doctor's profile page in one read: the doctor and the name and city of each of its
// locations. Sluice re-runs this for a doctor whenever the doctor or any location it
// looked up changes (or a location it looked up and did not find appears).
export default function project(doctor, ctx) {
  const ids = doctor.location_ids ?? (doctor.location_id != null ? [doctor.location_id] : []);
  const locations = ids.map((id) => ctx.get("location", id)).filter(Boolean);
  return {
    key: doctor.doctor_id,
    value: {
      name: doctor.name,
      specialty: doctor.specialty,
      locations: locations.map((l) => ({ id: l.location_id, name: l.name, city: l.city })),
    },
  };
}
