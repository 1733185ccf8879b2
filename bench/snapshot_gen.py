"""Events for the snapshot benchmark: N documents, then N partial updates of random keys."""
import json
import random
import sys

count = int(sys.argv[1])
kind = sys.argv[2]  # "docs" or "updates"
rng = random.Random(7 if kind == "docs" else 11)
specialties = ["cardiology", "dermatology", "oncology", "pediatrics", "neurology", "radiology"]
out = sys.stdout
for i in range(count):
    if kind == "docs":
        event = {"doctor_id": i, "updated_at": 1, "name": f"Doctor {i}",
                 "specialty": specialties[i % 6], "rating": round(1 + (i % 40) / 10, 1),
                 "location_id": i % 997, "accepting_patients": i % 3 != 0}
    else:
        event = {"doctor_id": rng.randrange(count), "updated_at": 2 + i,
                 "rating": round(1 + rng.randrange(40) / 10, 1)}
    out.write(json.dumps(event))
    out.write("\n")
