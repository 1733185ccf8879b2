// A doctor's profile page in one read: the doctor, the name and city of each of its
// locations, and its insurance plans. Sluice re-runs this for a doctor whenever the
// doctor or anything it looked up changes (or a document it looked up and did not find
// appears).
export default function project(doctor, ctx) {
  const ids = doctor.location_ids ?? (doctor.location_id != null ? [doctor.location_id] : []);
  const locations = ids.map((id) => ctx.get("location", id)).filter(Boolean);
  const plans = (doctor.plan_ids ?? []).map((id) => ctx.get("insurance_plan", id)).filter(Boolean);
  return {
    key: doctor.doctor_id,
    value: {
      name: doctor.name,
      specialty: doctor.specialty,
      locations: locations.map((l) => ({ id: l.location_id, name: l.name, city: l.city })),
      plans: plans.map((p) => ({ id: p.plan_id, name: p.name })),
    },
  };
}
